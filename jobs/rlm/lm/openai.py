"""The ``openai`` LM client: any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, llama.cpp).

Two wire protocols (``lm.openai.wire_api``):

* ``responses`` — ``POST {base_url}/responses`` with ``{"model", "input": [messages],
  "stream": false, "store": false}``; the answer is the text of the ``output`` items of type
  ``message``; usage from ``usage.input_tokens``/``output_tokens``/
  ``input_tokens_details.cached_tokens``.
* ``chat`` — ``POST {base_url}/chat/completions`` with ``{"model", "messages",
  "stream": false}``; the answer is ``choices[0].message.content``; usage from
  ``usage.prompt_tokens``/``completion_tokens``/``prompt_tokens_details.cached_tokens``.

The API key comes from the environment variable named by ``lm.openai.api_key_env`` and is
sent as ``Authorization: Bearer …``. A loopback ``base_url`` (``localhost``, ``127.0.0.1``,
``::1``) needs no key; an empty ``api_key_env`` means "this server needs no key" anywhere.
The key never appears in an error message, a log line or ``repr``.

Failures raise :class:`LMError` naming the protocol, the base URL, the HTTP status and the
provider's own message. ``429``, ``408``, ``409``, ``5xx``, timeouts and connection errors are
retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured, capped);
other statuses fail at once. When no model is configured the client asks ``GET /models`` and
uses the server's only model (local servers usually serve one); otherwise it says to set
``rlm.root_model``/``rlm.sub_model``.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from app.redact import REDACTED, redact_text
from jobs.rlm.lm.base import Completion, LMClient, LMConfigError, LMError, Message

WireApi = Literal["responses", "chat"]
WIRE_APIS: tuple[WireApi, ...] = ("responses", "chat")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"

#: Statuses worth another attempt (rate limits, overload, transient server errors).
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Longest provider message kept in an error.
MAX_REASON_CHARS = 500
#: Upper bound of a single backoff sleep, ``Retry-After`` included.
MAX_BACKOFF_S = 30.0


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    try:
        host = httpx.URL(url).host
    except (httpx.InvalidURL, TypeError):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def provider_message(response: httpx.Response) -> str:
    """The provider's own error text from an error response (OpenAI, vLLM, Ollama shapes)."""
    try:
        data: Any = response.json()
    except ValueError:
        return _clip(response.text) if response.text.strip() else ""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("code") or error.get("type")
            if code and str(code) not in message:
                message = f"{message} ({code})" if message else str(code)
            return _clip(message)
        if isinstance(error, str):
            return _clip(error)
        for key in ("message", "detail"):
            if data.get(key):
                value = data[key]
                return _clip(value if isinstance(value, str) else str(value))
    return _clip(str(data))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIClient(LMClient):
    """An OpenAI-compatible HTTP API as an :class:`LMClient` (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        wire_api: WireApi = "responses",
        default_model: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``api_key_env`` is used only to say which variable to set when the key is missing
        (``""``: the server needs no key). ``extra_body`` is merged into every request
        (e.g. ``{"temperature": 0}``). ``transport`` is for tests."""
        url = base_url.strip().rstrip("/")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise LMConfigError(f"lm.openai.base_url {base_url!r} is not a URL: {error}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise LMConfigError(
                f"lm.openai.base_url {base_url!r} must be an http(s) URL such as "
                f"{DEFAULT_BASE_URL} or http://127.0.0.1:8000/v1"
            )
        if wire_api not in WIRE_APIS:
            raise LMConfigError(
                f"lm.openai.wire_api must be one of {', '.join(WIRE_APIS)}, not {wire_api!r}"
            )
        if max_retries < 0 or timeout_s <= 0:
            raise LMConfigError("max_retries must be >= 0 and timeout_s > 0")
        key = (api_key or "").strip()
        if not key and api_key_env and not is_loopback_url(url):
            raise LMConfigError(
                f"no API key for {url}: set the environment variable {api_key_env} "
                "(lm.openai.api_key_env names the variable; set it to an empty string for a "
                "server that needs no key)"
            )
        self.base_url = url
        self.wire_api: WireApi = wire_api
        self.default_model = default_model or None
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.api_key_env = api_key_env
        self.extra_body = dict(extra_body or {})
        self._api_key = key
        self._discovered_model: str | None = None
        self._interrupted = threading.Event()
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            transport=transport,
        )

    @classmethod
    def from_env(
        cls,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        *,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> OpenAIClient:
        """A client whose key is read from the environment variable ``api_key_env``."""
        env = os.environ if environ is None else environ
        key = env.get(api_key_env, "") if api_key_env else ""
        return cls(base_url, key, api_key_env=api_key_env, **kwargs)

    def __repr__(self) -> str:
        return (
            f"OpenAIClient(base_url={self.base_url!r}, wire_api={self.wire_api!r}, "
            f"default_model={self.default_model!r}, api_key={'set' if self._api_key else 'none'})"
        )

    # -- the one call ------------------------------------------------------------------------

    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        if not messages:
            raise LMError("no messages to complete")
        self._interrupted.clear()
        name = model or self.default_model or self._server_model()
        wire = [{"role": m.role, "content": m.content} for m in messages]
        if self.wire_api == "responses":
            body: dict[str, Any] = {
                **self.extra_body,
                "model": name,
                "input": wire,
                "stream": False,
                "store": False,
            }
            data, attempts = self._request("POST", "/responses", body)
            completion = self._parse_responses(data, name)
        else:
            body = {**self.extra_body, "model": name, "messages": wire, "stream": False}
            data, attempts = self._request("POST", "/chat/completions", body)
            completion = self._parse_chat(data, name)
        completion.raw["attempts"] = attempts
        return completion

    def interrupt(self) -> None:
        """Stop retrying (the request in flight ends by itself, within ``timeout_s``)."""
        self._interrupted.set()

    def close(self) -> None:
        self._http.close()

    # -- HTTP --------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, REDACTED)
        return redact_text(text)

    def _fail(self, what: str, reason: str, attempts: int) -> LMError:
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        return LMError(self._scrub(f"{what} {self.base_url} failed{tries}: {reason}"))

    def _hint(self, status: int) -> str:
        if status == 401:
            where = f"${self.api_key_env}" if self.api_key_env else "the API key"
            return f"; check {where} (lm.openai.api_key_env)"
        if status == 404:
            other = "chat" if self.wire_api == "responses" else "responses"
            return (
                f"; check lm.openai.base_url (usually ends in /v1) and lm.openai.wire_api "
                f"(this server may only speak {other!r}), and the model name"
            )
        return ""

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF_S)
        base = self.backoff_s * float(1 << (attempt - 1))
        return min(base * (1 + random.random() / 4), MAX_BACKOFF_S)  # noqa: S311 - jitter

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], int]:
        """One API call with bounded retries: ``(parsed JSON object, attempts used)``."""
        url = self.base_url + path
        what = f"{method} {path} on"
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TimeoutException:
                reason = f"no answer within {self.timeout_s:g}s (timeout)"
                retryable = True
            except httpx.ConnectError as error:
                reason = f"could not connect: {error or type(error).__name__}"
                retryable = True
            except httpx.TransportError as error:
                reason = f"connection error: {error or type(error).__name__}"
                retryable = True
            else:
                if response.status_code < 400:
                    try:
                        data: Any = response.json()
                    except ValueError:
                        raise self._fail(
                            what,
                            f"HTTP {response.status_code} with a body that is not JSON: "
                            f"{_clip(response.text, 200)!r}",
                            attempt,
                        ) from None
                    if not isinstance(data, dict):
                        raise self._fail(what, "the answer is not a JSON object", attempt)
                    return data, attempt
                status = response.status_code
                message = provider_message(response) or response.reason_phrase
                reason = f"HTTP {status}: {message}{self._hint(status)}"
                retryable = status in RETRY_STATUSES or status >= 500
                retry_after = _retry_after(response)
            if not retryable or attempt == attempts:
                raise self._fail(what, reason, attempt)
            if self._interrupted.wait(self._delay(attempt, retry_after)):
                raise self._fail(what, f"interrupted while retrying after: {reason}", attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _server_model(self) -> str:
        """The model to use when none is configured: the server's only model."""
        if self._discovered_model is not None:
            return self._discovered_model
        try:
            data, _ = self._request("GET", "/models")
        except LMError as error:
            raise LMError(
                f"no model configured (set rlm.root_model / rlm.sub_model), and asking the "
                f"server for its models failed: {error}"
            ) from None
        ids = [
            str(entry["id"])
            for entry in data.get("data") or []
            if isinstance(entry, dict) and entry.get("id")
        ]
        if len(ids) != 1:
            offered = ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")
            raise LMError(
                f"no model configured for {self.base_url}: set rlm.root_model / rlm.sub_model"
                + (f" (the server offers: {offered})" if ids else "")
            )
        self._discovered_model = ids[0]
        return ids[0]

    # -- parsing -----------------------------------------------------------------------------

    def _parse_responses(self, data: dict[str, Any], requested: str) -> Completion:
        what = "POST /responses on"
        status = data.get("status")
        error = data.get("error")
        if status == "failed" or (isinstance(error, dict) and error):
            detail = _dict(error)
            message = detail.get("message") or detail.get("code") or "no reason given"
            raise self._fail(what, f"the model failed: {_clip(str(message))}", 1)
        texts: list[str] = []
        refusals: list[str] = []
        for item in data.get("output") or []:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            parts: list[str] = []
            for part in item.get("content") or []:
                if not isinstance(part, dict):
                    continue
                if part.get("type") in ("output_text", "text") and isinstance(
                    part.get("text"), str
                ):
                    parts.append(part["text"])
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
            if parts:
                texts.append("".join(parts))
        if not texts and isinstance(data.get("output_text"), str):
            texts.append(data["output_text"])
        if not texts and refusals:
            raise self._fail(what, f"the model refused: {_clip(' '.join(refusals))}", 1)
        if not texts and status == "incomplete":
            why = _dict(data.get("incomplete_details")).get("reason") or "no reason given"
            raise self._fail(what, f"the response is incomplete ({why}) and has no text", 1)
        use = _dict(data.get("usage"))
        return Completion(
            text="\n".join(texts),
            model=str(data.get("model") or requested),
            input_tokens=_int(use.get("input_tokens")),
            output_tokens=_int(use.get("output_tokens")),
            cached_input_tokens=_int(_dict(use.get("input_tokens_details")).get("cached_tokens")),
            raw={"wire_api": "responses", "id": data.get("id"), "status": status},
        )

    def _parse_chat(self, data: dict[str, Any], requested: str) -> Completion:
        what = "POST /chat/completions on"
        if isinstance(data.get("error"), dict | str):
            detail = data["error"]
            message = detail.get("message") if isinstance(detail, dict) else detail
            raise self._fail(what, f"the model failed: {_clip(str(message))}", 1)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._fail(what, "the answer has no choices", 1)
        choice = choices[0]
        message = _dict(choice.get("message"))
        content = message.get("content")
        if isinstance(content, list):  # content parts
            content = "".join(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") in ("text", "output_text")
            )
        if content is None and message.get("refusal"):
            raise self._fail(what, f"the model refused: {_clip(str(message['refusal']))}", 1)
        use = _dict(data.get("usage"))
        return Completion(
            text=content if isinstance(content, str) else "",
            model=str(data.get("model") or requested),
            input_tokens=_int(use.get("prompt_tokens")),
            output_tokens=_int(use.get("completion_tokens")),
            cached_input_tokens=_int(_dict(use.get("prompt_tokens_details")).get("cached_tokens")),
            raw={
                "wire_api": "chat",
                "id": data.get("id"),
                "finish_reason": choice.get("finish_reason"),
            },
        )
