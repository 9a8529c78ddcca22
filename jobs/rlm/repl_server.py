"""The RLM REPL server: a persistent Python process that runs the model's code cells.

It runs *inside* the sandbox with whatever ``python3`` is there, so it is one file, standard
library only, and must work on Python >= 3.9. Start it as ``python3 -I -S repl_server.py
[--limits JSON]``; it speaks the JSON-lines protocol of ``jobs/rlm/protocol.py`` over the
stdin/stdout it was started with.

What a cell sees
----------------
One namespace that lives as long as the process (nothing is re-pickled between cells), with:

* ``context`` -- the externalized context, read through the host: ``context.stats()``,
  ``context.search(query, **options)``, ``context.peek(path_or_offset, length=None)``,
  ``context.read_chunk(chunk_id)``;
* ``llm_query(prompt, model=None)``, ``rlm_query(prompt, context=None)``,
  ``write_artifact(name, content)`` -- proxied to the host, which enforces every budget; a
  call blocks until the host replies and a refusal raises ``HostError`` with its message;
* ``FINAL(text)`` and ``FINAL_VAR(name)`` -- set the final answer;
* ``answer`` -- a dict ``{"content": "", "ready": False}``: set ``answer["content"]`` and then
  ``answer["ready"] = True`` (in the same or a later cell) to set the final answer. Binding
  ``answer`` to a new dict with those keys works too; binding it to anything else does not
  set an answer (the dict is put back). After it is reported, ``ready`` goes back to False.
  ``FINAL``/``FINAL_VAR`` win over ``answer`` within one cell.

Only executed code sets the final answer; printed text that looks like ``FINAL(...)`` is just
output. Every name above (and ``HostError``) is put back after each cell, as fresh objects,
so rebinding or monkey-patching them only affects the cell that did it.

Output
------
``print``/``sys.stdout``/``sys.stderr`` go into one bounded buffer per cell
(``max_output_chars`` characters for stdout and stderr together; the rest is counted as
``truncated`` and dropped without being stored). File descriptors 0, 1 and 2 point at
``/dev/null``: raw ``os.write(1, ...)`` and the output of child processes are discarded
(use ``subprocess.run(..., capture_output=True)``). The protocol channel is a pair of private
descriptors duplicated at start and closed on exec, so nothing printed can be mistaken for a
protocol message. If the last statement of a cell is an expression, its ``repr`` is printed
(unless it is None), as in an interactive prompt.

Interrupts
----------
SIGINT while a cell runs raises ``KeyboardInterrupt`` in it; the cell reports
``error: "interrupted"`` and the REPL keeps its state. SIGINT between cells, or while a host
call is being sent or answered, is deferred or ignored, so the channel is never torn.
Processes forked by a cell never talk to the host: host calls refuse in them, and one that
falls out of the cell exits at once.
"""

from __future__ import annotations

import _ast
import _thread
import builtins
import io
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from types import CodeType, FrameType
    from typing import Any
else:
    import _signal  # the C module: ``signal`` imports ``enum``, a cold-start cost

_THIS_FILE = __file__
_RESERVED = (
    "context",
    "ask",
    "llm_query",
    "rlm_query",
    "write_artifact",
    "FINAL",
    "FINAL_VAR",
    "answer",
    "HostError",
)
_READ_CHUNK = 1 << 20
_RESERVE_BYTES = 2 << 20


# -- JSON ------------------------------------------------------------------------------------
# The ``json`` package imports ``re`` (and ``enum``, ...): a good part of a cold start. The C
# accelerator ``_json`` it is built on does all the work; use it directly, and fall back to
# ``json`` where it is missing or different (another implementation, a future version).


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unserializable(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_not_json)


def _c_codec() -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    import _json

    scanner = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    make_encoder = _json.make_encoder
    quote = _json.encode_basestring

    def loads(text: str) -> Any:
        try:
            value, end = scanner(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if text[end:].strip():
            raise ValueError("extra data after JSON")
        return value

    def dumps(value: Any) -> str:
        encoder = make_encoder({}, _unserializable, quote, None, ":", ",", False, False, False)
        return "".join(encoder(value, 0))

    if loads('{"a": [1, 2.5, "\\u00e9", null, true]}') != {"a": [1, 2.5, "\u00e9", None, True]}:
        raise ImportError("unexpected _json scanner")
    if dumps({"a": [1, 2.5, "\u00e9", None, True]}) != '{"a":[1,2.5,"\u00e9",null,true]}':
        raise ImportError("unexpected _json encoder")
    return loads, dumps


def _py_codec() -> tuple[Callable[[str], Any], Callable[[Any], str]]:
    import json

    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    return json.loads, dumps


try:
    _loads, _dumps = _c_codec()
except Exception:  # any surprise: the plain json package
    _loads, _dumps = _py_codec()


class HostError(Exception):
    """The host refused a call (a budget, a policy, a bad argument); the message says why."""


# -- process state ---------------------------------------------------------------------------


class _State:
    """Mutable process-wide state, in one place."""

    def __init__(self) -> None:
        self.main_pid = os.getpid()
        self.main_thread = 0
        self.cell_id: int | None = None  # the cell being run, until its result is sent
        self.in_cell = False  # SIGINT raises KeyboardInterrupt only while this is set
        self.critical = 0  # >0: SIGINT is deferred (a host call is on the channel)
        self.pending_interrupt = False
        self.final: tuple[str, str] | None = None  # (via, value) set by FINAL/FINAL_VAR
        self.next_call_id = 0
        self.api: dict[str, Any] = {}  # the reserved objects the current cell was given
        # Freed when memory runs out, so the REPL can still answer; re-made at the next cell.
        self.reserve: bytearray | None = bytearray(_RESERVE_BYTES)


_state = _State()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """Interrupt the running cell; defer while the channel is in use; ignore between cells."""
    if not _state.in_cell:
        return
    if _state.critical:
        _state.pending_interrupt = True
        return
    raise KeyboardInterrupt


# -- the channel -----------------------------------------------------------------------------


class _Channel:
    """JSON lines over the two private descriptors."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.buffer = bytearray()

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at EOF (the host is gone). Lines that are not JSON
        objects are skipped: the host is trusted, but a torn line must not kill the REPL."""
        while True:
            end = self.buffer.find(b"\n")
            while end < 0:
                chunk = os.read(self.read_fd, _READ_CHUNK)
                if not chunk:
                    return None
                start = len(self.buffer)
                self.buffer += chunk
                end = self.buffer.find(b"\n", start)
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            try:
                message = _loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(message, dict):
                return message

    def send(self, message: dict[str, Any]) -> None:
        """Write one message (its values must be JSON)."""
        self.send_bytes(_encode(message))

    def send_bytes(self, data: bytes) -> None:
        """Write one encoded line; the host is gone if this fails, and so are we."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.write_fd, view)
                view = view[written:]
        except OSError:
            os._exit(0)

    def call(self, fn: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Ask the host to run ``fn`` and block until it answers."""
        if os.getpid() != _state.main_pid:
            raise RuntimeError(f"{fn}: host calls are only available in the REPL process")
        if _thread.get_ident() != _state.main_thread:
            raise RuntimeError(f"{fn}: host calls are only available in the cell's main thread")
        if _state.cell_id is None:
            raise RuntimeError(f"{fn}: host calls are only available while a cell runs")
        _state.next_call_id += 1
        call_id = _state.next_call_id
        message = {"op": "call", "id": call_id, "fn": fn, "args": args, "kwargs": kwargs}
        try:
            data = _encode(message)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{fn}: arguments must be JSON values ({exc})") from None
        _state.critical += 1
        try:
            self.send_bytes(data)
            reply = self._wait_reply(call_id)
        finally:
            _state.critical -= 1
        if _state.pending_interrupt and _state.in_cell and not _state.critical:
            _state.pending_interrupt = False
            raise KeyboardInterrupt
        if reply.get("ok") is True:
            return reply.get("value")
        raise HostError(str(reply.get("error") or f"{fn}: refused by the host"))

    def _wait_reply(self, call_id: int) -> dict[str, Any]:
        while True:
            message = self.read()
            if message is None:
                os._exit(0)  # the host is gone
            op = message.get("op")
            if op == "reply" and message.get("id") == call_id:
                return message
            if op == "shutdown":
                os._exit(0)
            # A stale reply or an exec while a cell runs: the host broke the protocol; drop it.


def _encode(message: dict[str, Any]) -> bytes:
    """One protocol line. Lone surrogates (from user strings) are not UTF-8: they are
    replaced, so the line stays valid."""
    text = _dumps(message)
    return (text + "\n").encode("utf-8", "replace")


# -- bounded output --------------------------------------------------------------------------


class _Budget:
    def __init__(self, limit: int) -> None:
        self.remaining = max(limit, 0)
        self.truncated = False


class _Capture(io.TextIOBase):
    """A write-only text stream that keeps at most the budget's characters."""

    def __init__(self, budget: _Budget, name: str) -> None:
        super().__init__()
        self.budget = budget
        self.parts: list[str] = []
        self.stream_name = name
        self.buffer = _BinaryCapture(self)

    encoding = "utf-8"
    errors = "replace"

    @property
    def name(self) -> str:
        return self.stream_name

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the REPL's output is captured, it has no descriptor")

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        size = len(text)
        budget = self.budget
        if size <= budget.remaining:
            if size:
                self.parts.append(text)
                budget.remaining -= size
        else:
            if budget.remaining:
                self.parts.append(text[: budget.remaining])
                budget.remaining = 0
            budget.truncated = True
        return size

    def flush(self) -> None:
        return None

    def getvalue(self) -> str:
        return "".join(self.parts)


class _BinaryCapture(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 into the text capture."""

    def __init__(self, text: _Capture) -> None:
        super().__init__()
        self.text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self.text.write(raw.decode("utf-8", "replace"))
        return len(raw)


# -- the namespace ---------------------------------------------------------------------------


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _api(channel: _Channel, namespace: dict[str, Any]) -> dict[str, Any]:
    """Fresh objects for every reserved name (rebinding or patching them lasts one cell)."""
    call = channel.call

    def llm_query(prompt: str, model: str | None = None) -> Any:
        """Ask a plain sub-model; returns its text."""
        kwargs = {} if model is None else {"model": model}
        return call("llm_query", [prompt], kwargs)

    def rlm_query(prompt: str, context: Any = None) -> Any:
        """Ask a recursive RLM sub-run (depth-limited by the host); returns its answer."""
        kwargs = {} if context is None else {"context": context}
        return call("rlm_query", [prompt], kwargs)

    def ask(question: str) -> Any:
        """Ask the person (or the parent agent) a question; the run pauses until it is
        answered and the answer arrives in the next turn. Returns the question's id."""
        return call("ask", [question], {})

    def write_artifact(name: str, content: str) -> Any:
        """Record a text artifact of the run with the host."""
        if not isinstance(content, str):
            raise TypeError("write_artifact takes text; write binary files under /artifacts")
        return call("write_artifact", [name, content], {})

    def FINAL(text: object) -> None:
        """Set the final answer to ``text``."""
        _state.final = ("FINAL", _text(text))

    def FINAL_VAR(name: object) -> None:
        """Set the final answer to the value of the variable called ``name``."""
        if isinstance(name, str):
            if name not in namespace:
                raise NameError(f"FINAL_VAR: there is no variable named {name!r}")
            _state.final = ("FINAL_VAR", _text(namespace[name]))
        else:
            _state.final = ("FINAL_VAR", _text(name))

    class Context:
        """The run's context, kept outside the sandbox and read through the host."""

        __slots__ = ()

        def stats(self) -> Any:
            """Sizes and layout of the context."""
            return call("context.stats", [], {})

        def search(self, query: str, **options: Any) -> Any:
            """Search the context; options are passed to the host as they are."""
            return call("context.search", [query], options)

        def peek(self, path_or_offset: str | int, length: int | None = None) -> Any:
            """Read part of the context, by path or by offset."""
            kwargs = {} if length is None else {"length": length}
            return call("context.peek", [path_or_offset], kwargs)

        def read_chunk(self, chunk_id: Any) -> Any:
            """Read one chunk by id (as returned by ``search`` or ``stats``)."""
            return call("context.read_chunk", [chunk_id], {})

        def __repr__(self) -> str:
            return "<context: use context.stats(), .search(), .peek(), .read_chunk()>"

    return {
        "context": Context(),
        "ask": ask,
        "llm_query": llm_query,
        "rlm_query": rlm_query,
        "write_artifact": write_artifact,
        "FINAL": FINAL,
        "FINAL_VAR": FINAL_VAR,
        "HostError": HostError,
    }


def _restore(channel: _Channel, namespace: dict[str, Any]) -> list[str]:
    """Put every reserved name back; return the ones the cell had rebound."""
    previous = _state.api
    rebound = [
        name for name in previous if name not in namespace or namespace[name] is not previous[name]
    ]
    fresh = _api(channel, namespace)
    namespace.update(fresh)
    _state.api = fresh
    answer = namespace.get("answer")
    if not (isinstance(answer, dict) and "content" in answer and "ready" in answer):
        if "answer" in namespace:
            rebound.append("answer")
        namespace["answer"] = {"content": "", "ready": False}
    return rebound


# -- running a cell --------------------------------------------------------------------------


def _compile(code: str, filename: str) -> tuple[CodeType, CodeType | None]:
    """The cell's statements, and its last expression apart (to print its value)."""
    tree = compile(code, filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    assert isinstance(tree, _ast.Module)
    last: CodeType | None = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        expr = tree.body.pop()
        assert isinstance(expr, _ast.Expr)
        last = compile(_ast.Expression(expr.value), filename, "eval", dont_inherit=True)
    return compile(tree, filename, "exec", dont_inherit=True), last


def _format_error(exc: BaseException, filename: str, code: str, limit: int) -> str:
    """A traceback of the cell's own frames (the REPL's are left out), at most ``limit``."""
    import linecache
    import traceback

    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    frames = [
        frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename != _THIS_FILE
    ]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip("\n")
    if len(text) > limit:
        text = "..." + text[len(text) - limit :]
    return text


def _run_cell(
    channel: _Channel, namespace: dict[str, Any], cell_id: int, code: str, limit: int
) -> dict[str, Any]:
    started = time.monotonic()
    budget = _Budget(limit)
    out = _Capture(budget, "<stdout>")
    err = _Capture(budget, "<stderr>")
    _point_streams(out, err)
    filename = f"<cell {cell_id}>"
    before = set(namespace)
    _state.final = None
    error: str | None = None
    try:
        _state.in_cell = True
        body, last = _compile(code, filename)
        exec(body, namespace)  # noqa: S102 -- running the model's code is the point
        if last is not None:
            value = eval(last, namespace)  # noqa: S307 -- the cell's last expression
            if value is not None:
                out.write(repr(value) + "\n")
        _state.in_cell = False
    except KeyboardInterrupt:
        _state.in_cell = False
        error = "interrupted"
    except BaseException as exc:  # SystemExit too: the REPL stays
        _state.in_cell = False
        if isinstance(exc, MemoryError):
            _state.reserve = None  # room to report it
        error = _format_error(exc, filename, code, max(limit, 1000))
    if os.getpid() != _state.main_pid:
        os._exit(0)  # a process forked by the cell fell out of it: it must not answer
    _state.pending_interrupt = False
    notes = "".join(
        f"[note: {name!r} is reserved; it was restored after this cell]\n"
        for name in _restore(channel, namespace)
    )
    _point_streams(_DISCARD, _DISCARD)
    final = None
    via_value = _take_final()
    if via_value is not None:
        final = {"via": via_value[0], "value": via_value[1]}
    else:
        answer = namespace["answer"]
        if answer.get("ready"):
            final = {"via": "answer", "value": _text(answer.get("content", ""))}
            answer["ready"] = False
    reserved = set(_RESERVED)
    return {
        "op": "result",
        "id": cell_id,
        "stdout": out.getvalue(),
        "stderr": err.getvalue() + notes,
        "truncated": budget.truncated,
        "new_names": sorted(
            name
            for name in namespace
            if name not in before and name not in reserved and not name.startswith("_")
        ),
        "final": final,
        "error": error,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


def _take_final() -> tuple[str, str] | None:
    """The answer FINAL/FINAL_VAR set during the cell, if any (and forget it)."""
    final, _state.final = _state.final, None
    return final


_DISCARD = _Capture(_Budget(0), "<discarded>")


def _point_streams(out: _Capture, err: _Capture) -> None:
    sys.stdout = sys.__stdout__ = out  # type: ignore[assignment,misc]
    sys.stderr = sys.__stderr__ = err  # type: ignore[assignment,misc]


# -- start-up --------------------------------------------------------------------------------


def _apply_limits(limits: dict[str, Any]) -> None:
    """Lower this process's rlimits (inherited by everything the cells start)."""
    import resource

    names = {
        "as": resource.RLIMIT_AS,
        "cpu": resource.RLIMIT_CPU,
        "fsize": resource.RLIMIT_FSIZE,
        "nproc": resource.RLIMIT_NPROC,
        "core": resource.RLIMIT_CORE,
        "nofile": resource.RLIMIT_NOFILE,
    }
    for key, wanted in limits.items():
        which = names.get(key)
        if which is None or not isinstance(wanted, int) or wanted < 0:
            raise SystemExit(f"repl_server: bad limit {key}={wanted!r}")
        _, hard = resource.getrlimit(which)
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(which, (value, value))


def _take_channel() -> _Channel:
    """Keep stdin/stdout as private, close-on-exec descriptors; point 0/1/2 at /dev/null."""
    read_fd = os.dup(0)
    write_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdin = sys.__stdin__ = io.StringIO("")  # type: ignore[assignment,misc]
    _point_streams(_DISCARD, _DISCARD)
    return _Channel(read_fd, write_fd)


def main(argv: list[str]) -> int:
    limits: dict[str, Any] = {}
    if len(argv) == 2 and argv[0] == "--limits":
        limits = _loads(argv[1])
    elif argv:
        sys.stderr.write("usage: repl_server.py [--limits JSON]\n")
        return 2
    if limits:
        _apply_limits(limits)
    channel = _take_channel()
    _state.main_thread = _thread.get_ident()
    _signal.signal(_signal.SIGINT, _on_sigint)
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    _restore(channel, namespace)
    channel.send({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
    _serve(channel, namespace)
    return 0


def _serve(channel: _Channel, namespace: dict[str, Any]) -> None:
    while True:
        try:
            message = channel.read()
            if message is None or message.get("op") == "shutdown":
                return
            if message.get("op") != "exec":
                continue  # a stale reply: the call it answered was already given up
            cell_id = message.get("id")
            code = message.get("code")
            limit = message.get("max_output_chars", 20_000)
            if not isinstance(cell_id, int) or not isinstance(code, str):
                continue
            if not isinstance(limit, int):
                limit = 20_000
            _state.cell_id = cell_id
            if _state.reserve is None:
                try:  # noqa: SIM105 -- importing contextlib is a start-up cost
                    _state.reserve = bytearray(_RESERVE_BYTES)
                except MemoryError:
                    pass  # still full: run the cell anyway (it may be the `del` that helps)
            result = _run_cell(channel, namespace, cell_id, code, limit)
            channel.send(result)
            _state.cell_id = None
        except KeyboardInterrupt:
            # A second SIGINT landed while the cell was being wound up: still answer it.
            _abandon_cell(channel, "interrupted")
        except MemoryError:
            # The cells left too little memory for the REPL's own bookkeeping: free the
            # reserve, say so, and keep the state (``del`` in the next cell frees memory).
            _state.reserve = None
            _abandon_cell(
                channel,
                "MemoryError: the REPL is out of memory (the limit is the sandbox's); "
                "free some with `del` on large variables",
            )


def _abandon_cell(channel: _Channel, error: str) -> None:
    """Answer the current cell, if any, with ``error`` alone."""
    _state.in_cell = False
    _point_streams(_DISCARD, _DISCARD)
    if _state.cell_id is not None:
        channel.send({"op": "result", "id": _state.cell_id, "error": error})
        _state.cell_id = None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
