"""The MCP server's connection to the runner: find it, start it if needed, survive its restarts.

Where the runner is and how to authenticate never come from tool arguments (a model could
forge them) but from the home's files:

- ``control_endpoint.json`` ``{base_url, token_path, pid, started_at}`` names the live runner;
- profile ``full`` authenticates with the control token in ``token_path``
  (``control_auth.json``) and sends ``X-Codex-Client: mcp``, so the runner knows a model is
  asking (a cancel then needs a person's confirmation);
- profile ``question_only`` authenticates with the run's delegation token, read from the 0600
  file named by ``$CODEX_DELEGATION_TOKEN_FILE`` (the runner sets it for a delegate's MCP
  server); it never reads the control token.

Every file is checked to belong to this user and be private (no group/other bits): a file
someone else could write could point the server at a fake runner.

When no runner answers, profile ``full`` starts ``app serve`` for the same home, detached
(``start_new_session=True``, output to ``<home>/logs/runner.log``), unless autostart is off;
the next tool result says so. On a refused connection or a 401 the files are read again and
the request is retried once, so a runner restart (new port, new control token) mid-session
is invisible to the model. A request that may have reached the runner before the connection
broke is retried only when it is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from app.home import HOME_ENV, Home
from app.redact import redact_text

if TYPE_CHECKING:
    # Imported where used: httpx costs a tenth of a second, and ``app mcp`` answers
    # ``initialize`` before any tool call needs it.
    import httpx

log = logging.getLogger("app.mcp")

#: Environment variable naming the 0600 file with a delegate's delegation token.
TOKEN_FILE_ENV = "CODEX_DELEGATION_TOKEN_FILE"  # noqa: S105 - a variable name, not a secret
#: Optional environment variable with the delegate's own run id.
RUN_ID_ENV = "CODEX_DELEGATION_RUN_ID"
CLIENT_HEADER = "X-Codex-Client"
#: Where the runner's own output goes when this server starts it.
RUNNER_LOG = Path("logs") / "runner.log"
#: The route the runner records MCP-side security violations on (see ``record_violation``).
VIOLATIONS_ROUTE = "/api/security-violations"

Method = Literal["GET", "POST"]


class RunnerUnavailable(Exception):
    """No runner could be reached (or started); the message says what to do."""

    code = "runner_unavailable"


class RunnerError(Exception):
    """The runner answered with an error: its ``{error, detail}`` and the HTTP status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class InsecureFile(RunnerUnavailable):
    """An endpoint or credential file that another user could have written or read."""


@dataclass(frozen=True)
class Endpoint:
    """The live runner, as ``control_endpoint.json`` describes it."""

    base_url: str
    token_path: Path
    pid: int


def read_private(path: Path) -> bytes:
    """Read a file that must be this user's own and private (mode without group/other bits)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureFile(
                f"{path} must belong to you and be private (chmod 600); refusing to trust it"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_endpoint(home: Home) -> Endpoint | None:
    """The runner named by the home's endpoint file, or None when there is none (or it is
    unreadable: a runner may be writing it right now)."""
    try:
        document = json.loads(read_private(home.endpoint_path))
        return Endpoint(
            base_url=str(document["base_url"]).rstrip("/"),
            token_path=Path(document["token_path"]),
            pid=int(document["pid"]),
        )
    except InsecureFile:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may be someone else's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delegation_token_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The delegation token file the runner named for this process, if any."""
    value = environ.get(TOKEN_FILE_ENV, "").strip()
    return Path(value) if value else None


def own_run_id(token_file: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The delegate's own run id: ``$CODEX_DELEGATION_RUN_ID``, else the run directory that
    holds the token file (the runner writes it to ``runs/<run_id>/delegation_token``)."""
    value = environ.get(RUN_ID_ENV, "").strip()
    if value:
        return value
    if token_file is not None and token_file.parent.parent.name == "runs":
        return token_file.parent.name
    return None


class RunnerClient:
    """An async HTTP client of the runner that (re)connects on demand."""

    def __init__(
        self,
        home: Home,
        *,
        token_file: Path | None = None,
        autostart: bool = True,
        start_timeout_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        """``token_file`` set means: authenticate as that delegate (profile question_only)."""
        self.home = home
        self.token_file = token_file
        self.autostart = autostart and token_file is None
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self.base_url: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._lock = anyio.Lock()
        self._notices: list[str] = []
        self._started: subprocess.Popen[bytes] | None = None
        self._violations_route = True

    # -- connection ------------------------------------------------------------------------------

    def take_notice(self) -> str | None:
        """What the caller should be told once (e.g. that a runner was started), then forget it."""
        if not self._notices:
            return None
        text = " ".join(self._notices)
        self._notices.clear()
        return text

    async def aclose(self) -> None:
        """Close the HTTP connections (a runner this server started keeps running)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _client(self, *, may_start: bool = True) -> httpx.AsyncClient:
        if self._http is None:
            async with self._lock:
                if self._http is None:
                    self._http = await self._connect(may_start=may_start)
        return self._http

    async def _reset(self, stale: httpx.AsyncClient | None) -> None:
        """Forget a connection that failed so the next request reads the files again."""
        async with self._lock:
            if stale is not None and self._http is stale:
                self._http = None
                await stale.aclose()

    async def _connect(self, *, may_start: bool) -> httpx.AsyncClient:
        import httpx

        if self._started is not None and self._started.poll() is not None:
            self._started = None  # reaped: a runner this server started has exited
        endpoint = read_endpoint(self.home)
        if endpoint is None or not await self._healthy(endpoint):
            if not (self.autostart and may_start):
                raise RunnerUnavailable(self._unreachable_text(endpoint))
            endpoint = await self._start_runner()
        token = self._read_token(endpoint)
        headers = {"Authorization": f"Bearer {token}", CLIENT_HEADER: "mcp"}
        self.base_url = endpoint.base_url
        return httpx.AsyncClient(
            base_url=endpoint.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=5.0),
            # Loopback only: never route the runner's traffic through a proxy from the env.
            trust_env=False,
        )

    def _unreachable_text(self, endpoint: Endpoint | None) -> str:
        where = f"no runner is up for {self.home.root}"
        if endpoint is not None:
            where = f"the runner at {endpoint.base_url} (pid {endpoint.pid}) does not answer"
        if self.token_file is not None:
            return f"{where}; a delegate cannot start one: ask a person to start `app serve`"
        return f"{where}; start it with `app serve --home {self.home.root}` (autostart is off)"

    def _read_token(self, endpoint: Endpoint) -> str:
        if self.token_file is not None:
            path, kind = self.token_file, "delegation token"
            try:
                token = read_private(path).decode().strip()
            except InsecureFile:
                raise
            except OSError as error:
                raise RunnerUnavailable(
                    f"cannot read the {kind} file {path} (${TOKEN_FILE_ENV}): {error.strerror}"
                ) from None
        else:
            path, kind = endpoint.token_path, "control token"
            try:
                token = str(json.loads(read_private(path))["token"])
            except InsecureFile:
                raise
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise RunnerUnavailable(f"cannot read the {kind} from {path}: {error}") from None
        if not token:
            raise RunnerUnavailable(f"the {kind} file {path} is empty")
        return token

    async def _healthy(self, endpoint: Endpoint) -> bool:
        import httpx

        if not pid_alive(endpoint.pid):
            return False
        try:
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as probe:
                response = await probe.get(f"{endpoint.base_url}/api/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _start_runner(self) -> Endpoint:
        """Start ``app serve`` for this home, detached, and wait until it answers."""
        self.home.ensure()
        log_path = self.home.root / RUNNER_LOG
        log_path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        env = dict(os.environ)
        env[HOME_ENV] = str(self.home.root)  # the env wins over --home: keep them the same
        for name in (TOKEN_FILE_ENV, RUN_ID_ENV):
            env.pop(name, None)
        # The runner must import this very code base, installed or not.
        root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--home", str(self.home.root)],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                cwd=self.home.root,
                env=env,
                # Its own session: no signal for our process group (Codex stopping its MCP
                # servers) reaches it, and it outlives this server.
                start_new_session=True,
            )
        except OSError as error:
            raise RunnerUnavailable(f"could not start `app serve`: {error}") from None
        finally:
            os.close(fd)
        self._started = proc
        log.info(
            "started a runner (pid %s) for %s; its log: %s", proc.pid, self.home.root, log_path
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            endpoint = read_endpoint(self.home)
            # Another server may have started one at the same time: whichever runner won the
            # home's lock is the one to use.
            if endpoint is not None and await self._healthy(endpoint):
                self._notices.append(
                    f"No runner was up for {self.home.root}, so one was started "
                    f"(pid {endpoint.pid}, {endpoint.base_url}; log: {log_path}). It keeps "
                    f"running after this session; `kill {endpoint.pid}` stops it cleanly."
                )
                return endpoint
            if proc.poll() is not None and not pid_alive(self._lock_holder()):
                break  # ours failed, and no other runner is on its way up either
            await anyio.sleep(0.05)
        raise RunnerUnavailable(
            f"started `app serve` for {self.home.root} but it did not come up "
            f"(exit code {proc.poll()}); last lines of {log_path}:\n{_tail(log_path)}"
        )

    def _lock_holder(self) -> int:
        """The pid in the home's runner lock file (a runner writes it once it holds the lock)."""
        try:
            return int(self.home.lock_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    # -- requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: Method,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotent: bool | None = None,
        may_start: bool = True,
    ) -> httpx.Response:
        """Send one request, reconnecting once when the runner moved, restarted or went away.

        ``idempotent`` (default: GET only) allows a retry after a connection broke mid-request;
        ``may_start=False`` never starts a runner for this request.
        """
        import httpx

        retry_ambiguous = method == "GET" if idempotent is None else idempotent
        timeout = httpx.Timeout(timeout_s, connect=5.0) if timeout_s is not None else None
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for attempt in (1, 2):
            http = await self._client(may_start=may_start)
            try:
                response = await http.request(method, path, json=json_body, params=params, **extra)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                await self._reset(http)
                if attempt == 1:
                    log.info("runner unreachable (%s); reading its endpoint again", error)
                    continue
                raise RunnerUnavailable(f"cannot reach the runner: {error}") from None
            except httpx.TransportError as error:
                await self._reset(http)
                if attempt == 1 and retry_ambiguous:
                    log.info("connection to the runner broke (%r); retrying once", error)
                    continue
                raise RunnerUnavailable(
                    f"the connection to the runner broke during the request ({error!r}); it "
                    "may or may not have taken effect: check with delegate.status"
                ) from None
            if response.status_code == 401 and attempt == 1:
                # A new runner on the same home has a new control token: read it again.
                log.info("runner answered 401; reading its endpoint and token again")
                await self._reset(http)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(
        self,
        method: Method,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotent: bool | None = None,
    ) -> tuple[int, bytes]:
        """:meth:`request`, raising RunnerError on an error answer; returns (status, body)."""
        response = await self.request(
            method,
            path,
            json_body=json_body,
            params=params,
            timeout_s=timeout_s,
            idempotent=idempotent,
        )
        if response.status_code >= 400:
            raise error_from(response)
        return response.status_code, response.content

    async def wait_for_event(
        self, run_id: str, *, after: int, types: frozenset[str], timeout_s: float
    ) -> str | None:
        """Follow the run's event stream from ``after`` until an event of one of ``types``
        arrives (its type) or ``timeout_s`` passes (None). A broken stream ends the wait early;
        the caller reads the run's state again anyway."""
        import httpx

        if timeout_s <= 0:
            return None
        http = await self._client()
        with anyio.move_on_after(timeout_s):
            try:
                async with http.stream(
                    "GET",
                    f"/api/runs/{run_id}/events/stream",
                    params={"after": after},
                    timeout=httpx.Timeout(5.0, read=None),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from(response)
                    async for line in response.aiter_lines():
                        if line.startswith("event: ") and line[7:].strip() in types:
                            return line[7:].strip()
            except httpx.TransportError:
                await self._reset(http)
        return None

    async def record_violation(
        self, *, kind: str, tool: str, paths: list[str], run_id: str | None
    ) -> bool:
        """Ask the runner to record a ``security_violation``; True when it did.

        The runner owns the event log, so the event has to be written by it: the request
        carries only the kind, the tool and the JSON paths of what was refused (never a
        value), and the runner composes the event. Until the runner serves this route the
        violation lives in this server's stderr log and the tool error only; a runner that
        answers 404/405 is not asked again during this session.
        """
        if not self._violations_route:
            return False
        body = {"kind": kind, "tool": tool, "paths": paths[:20], "run_id": run_id}
        try:
            # Never start a runner just to report: a refused call changes nothing.
            response = await self.request(
                "POST", VIOLATIONS_ROUTE, json_body=body, timeout_s=5.0, may_start=False
            )
        except RunnerUnavailable:
            return False
        if response.status_code in (404, 405):
            self._violations_route = False
            return False
        return response.status_code < 300


def error_from(response: httpx.Response) -> RunnerError:
    """The runner's ``{error, detail}`` error as an exception (any other body is summarised)."""
    try:
        body = msgspec.json.decode(response.content)
        code, detail = str(body["error"]), str(body["detail"])
    except (msgspec.DecodeError, KeyError, TypeError):
        code = f"http_{response.status_code}"
        detail = redact_text(response.text[:500]) or response.reason_phrase
    return RunnerError(response.status_code, code, detail)


def new_request_id() -> str:
    """A fresh control request id for an action the caller did not name."""
    return f"mcp-{uuid.uuid4().hex}"


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return redact_text("\n".join(text.splitlines()[-lines:]))
