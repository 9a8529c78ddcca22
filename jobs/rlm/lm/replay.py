"""The ``replay`` LM client and the trajectory recorder.

A *trajectory file* is JSON lines, one object per model call, in call order. Root and sub
calls are two separate streams in the same file, told apart by ``kind``::

    {"kind": "meta", "format": "rlm-trajectory", "version": 1}
    {"kind": "root", "match": "Count the TODOs", "text": "```repl\\nprint(1)\\n```",
     "model": "gpt-5-mini", "usage": {"input_tokens": 812, "output_tokens": 40}}
    {"kind": "sub", "text": "3", "model": "gpt-5-nano", "usage": {"input_tokens": 90}}
    {"kind": "root", "text": "FINAL(3)"}

Keys of a call object:

``kind`` (required)
    ``"root"`` (the RLM loop's model) or ``"sub"`` (``llm_query``/``rlm_query`` sub-calls).
    ``"meta"`` lines (any other keys) are ignored; so are blank lines.
``text`` or ``error`` (exactly one, required)
    The answer, or an error message the call raises as :class:`LMError` (a recorded failure).
``model`` (optional)
    The model the answer is reported as; default: the requested model, else ``"replay"``.
``usage`` (optional)
    ``input_tokens``, ``output_tokens``, ``cached_input_tokens`` (ints), ``cost_usd``.
``match`` (optional)
    What the conversation must look like for this answer to be given: a string (the last
    user message must contain it), or an object with ``last_user`` (same) and/or ``any``
    (some message of any role contains it). A mismatch raises :class:`LMError` naming the
    call, the line and the expected text; the position does not advance.
anything else
    Informational and ignored on replay; the recorder writes ``prompt`` (the last user
    message, clipped), ``messages`` (how many) and ``duration_ms``.

:class:`ReplayClient` returns one kind's answers in file order, deterministically (a lock
makes concurrent calls take distinct answers), and raises :class:`LMError` when the stream
runs out. :attr:`ReplayClient.position` can be checkpointed and passed back as ``start`` to
continue a replay after a pause. :class:`RecordingClient` wraps a real client and appends
every call (answers and failures) to a trajectory file, so a real run can be re-run offline
with ``rlm.lm_client = "replay"`` and ``rlm.replay_path`` set to that file. Everything
written is redacted (``app.redact``) first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.redact import redact, redact_text
from jobs.rlm.lm.base import Completion, LMClient, LMConfigError, LMError, Message

Kind = Literal["root", "sub"]
KINDS: tuple[Kind, ...] = ("root", "sub")
FORMAT = "rlm-trajectory"
VERSION = 1
#: How much of the last user message the recorder keeps (informational only).
PROMPT_CHARS = 2_000
_USAGE_INTS = ("input_tokens", "output_tokens", "cached_input_tokens")


@dataclass(frozen=True)
class TrajectoryEntry:
    """One recorded model call."""

    kind: Kind
    line: int
    text: str | None = None
    error: str | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    match_last_user: str | None = None
    match_any: str | None = None

    def expectation(self) -> str:
        parts = []
        if self.match_last_user is not None:
            parts.append(f"the last user message to contain {self.match_last_user!r}")
        if self.match_any is not None:
            parts.append(f"some message to contain {self.match_any!r}")
        return " and ".join(parts)


def _bad(path: Path, line: int, why: str) -> LMConfigError:
    return LMConfigError(f"trajectory {path}, line {line}: {why}")


def _parse_entry(path: Path, line: int, obj: Any) -> TrajectoryEntry | None:
    if not isinstance(obj, dict):
        raise _bad(path, line, "not a JSON object")
    kind = obj.get("kind")
    if kind == "meta":
        return None
    if kind not in KINDS:
        raise _bad(path, line, f"kind must be 'root', 'sub' or 'meta', not {kind!r}")
    text, error = obj.get("text"), obj.get("error")
    if (text is None) == (error is None):
        raise _bad(path, line, "needs exactly one of 'text' and 'error'")
    if text is not None and not isinstance(text, str):
        raise _bad(path, line, "'text' must be a string")
    if error is not None and not isinstance(error, str):
        raise _bad(path, line, "'error' must be a string")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad(path, line, "'model' must be a string")
    usage = obj.get("usage") or {}
    if not isinstance(usage, dict):
        raise _bad(path, line, "'usage' must be an object")
    for key in _USAGE_INTS:
        value = usage.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(path, line, f"usage.{key} must be a non-negative integer")
    cost = usage.get("cost_usd")
    if cost is not None and (not isinstance(cost, int | float) or isinstance(cost, bool)):
        raise _bad(path, line, "usage.cost_usd must be a number")
    match = obj.get("match")
    last_user: str | None = None
    any_message: str | None = None
    if isinstance(match, str):
        last_user = match
    elif isinstance(match, dict):
        unknown = set(match) - {"last_user", "any"}
        if unknown:
            raise _bad(path, line, f"unknown match keys {sorted(unknown)} (use last_user, any)")
        last_user, any_message = match.get("last_user"), match.get("any")
        if not all(v is None or isinstance(v, str) for v in (last_user, any_message)):
            raise _bad(path, line, "match values must be strings")
    elif match is not None:
        raise _bad(path, line, "'match' must be a string or an object")
    return TrajectoryEntry(
        kind=kind,
        line=line,
        text=text,
        error=error,
        model=model,
        usage=dict(usage),
        match_last_user=last_user,
        match_any=any_message,
    )


def load_trajectory(path: Path) -> list[TrajectoryEntry]:
    """Every call of a trajectory file, both kinds, in file order (raises LMConfigError)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LMConfigError(f"trajectory file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LMConfigError(f"cannot read trajectory file {path}: {error}") from None
    entries: list[TrajectoryEntry] = []
    for number, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as error:
            raise _bad(path, number, f"not JSON ({error})") from None
        entry = _parse_entry(path, number, obj)
        if entry is not None:
            entries.append(entry)
    return entries


def last_user_message(messages: list[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ReplayClient(LMClient):
    """Answers one kind's calls from a trajectory file, in order (see the module docstring)."""

    name = "replay"

    def __init__(
        self,
        path: Path | str,
        kind: Kind,
        *,
        start: int = 0,
        default_model: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise LMConfigError(f"replay kind must be 'root' or 'sub', not {kind!r}")
        self.path = Path(path)
        self.kind: Kind = kind
        self.default_model = default_model or None
        self.entries = [entry for entry in load_trajectory(self.path) if entry.kind == kind]
        if not 0 <= start <= len(self.entries):
            raise LMConfigError(
                f"cannot start replaying {kind} calls of {self.path} at #{start + 1}: "
                f"the file has {len(self.entries)}"
            )
        self._position = start
        self._lock = threading.Lock()

    @property
    def position(self) -> int:
        """How many of this kind's calls were answered (checkpoint it; pass back as start)."""
        with self._lock:
            return self._position

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.entries) - self._position

    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        with self._lock:
            index = self._position
            if index >= len(self.entries):
                raise LMError(
                    f"replay of {self.path} ran out of {self.kind} calls: {self.kind} call "
                    f"#{index + 1} was made, the trajectory has only {len(self.entries)}"
                )
            entry = self.entries[index]
            self._check(entry, index, messages)
            self._position = index + 1
        if entry.error is not None:
            raise LMError(entry.error)
        usage = entry.usage
        cost = usage.get("cost_usd")
        return Completion(
            text=entry.text or "",
            model=entry.model or model or self.default_model or "replay",
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            cached_input_tokens=int(usage.get("cached_input_tokens", 0)),
            cost_usd=float(cost) if cost is not None else None,
            raw={"replay": str(self.path), "line": entry.line, "call": index + 1},
        )

    def _check(self, entry: TrajectoryEntry, index: int, messages: list[Message]) -> None:
        last = last_user_message(messages)
        ok = entry.match_last_user is None or entry.match_last_user in last
        if entry.match_any is not None:
            ok = ok and any(entry.match_any in message.content for message in messages)
        if not ok:
            raise LMError(
                f"replay of {self.path} diverged at {self.kind} call #{index + 1} "
                f"(line {entry.line}): expected {entry.expectation()}; the last user message "
                f"was {_clip(last, 300)!r}"
            )


# -- recording ----------------------------------------------------------------------------------

_file_locks: dict[Path, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    key = path.resolve()
    with _file_locks_guard:
        return _file_locks.setdefault(key, threading.Lock())


def append_entry(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one object to a trajectory file (a ``meta`` line first when it is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock_for(path):
        lines = []
        if not path.exists() or path.stat().st_size == 0:
            lines.append(json.dumps({"kind": "meta", "format": FORMAT, "version": VERSION}))
        lines.append(json.dumps(redact(dict(entry)), ensure_ascii=False))
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()


class RecordingClient(LMClient):
    """Wraps a client and appends each of its calls to a trajectory file as ``kind``."""

    def __init__(self, inner: LMClient, path: Path | str, kind: Kind) -> None:
        if kind not in KINDS:
            raise LMConfigError(f"recording kind must be 'root' or 'sub', not {kind!r}")
        self.inner = inner
        self.path = Path(path)
        self.kind: Kind = kind
        self.name = inner.name

    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        started = time.monotonic()
        info: dict[str, Any] = {
            "prompt": redact_text(_clip(last_user_message(messages), PROMPT_CHARS)),
            "messages": len(messages),
        }
        try:
            completion = self.inner.complete(messages, model=model)
        except LMError as error:
            duration = int((time.monotonic() - started) * 1000)
            append_entry(
                self.path,
                {"kind": self.kind, "error": str(error), **info, "duration_ms": duration},
            )
            raise
        usage: dict[str, Any] = {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cached_input_tokens": completion.cached_input_tokens,
        }
        if completion.cost_usd is not None:
            usage["cost_usd"] = completion.cost_usd
        append_entry(
            self.path,
            {
                "kind": self.kind,
                "text": completion.text,
                "model": completion.model,
                "usage": usage,
                **info,
                "duration_ms": int((time.monotonic() - started) * 1000),
            },
        )
        return completion

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()
