"""The RLM's externalized context: repository text served to the REPL through ``context.*``.

In an RLM run the repository stays on the host (DESIGN §9). The model's code reads it only
through four calls proxied from the sandbox: ``context.stats()``, ``context.search()``,
``context.peek()`` and ``context.read_chunk()``. :class:`ContextStore` serves them;
:meth:`ContextStore.dispatch` is the one entry point the RLM host uses.

Corpus
    Text files under the context roots, read once (on first use) into an in-memory snapshot,
    ordered by path (code-point order). Paths are POSIX, relative to the root; with several
    roots each path is prefixed by its root's label (the root directory's name). Skipped:
    directories in :data:`SKIP_DIRS` (``.git``, ``node_modules``, ``.venv``, caches),
    symlinked directories (never followed), symlinks that resolve outside
    ``paths.allowed_roots``, special files, files over ``max_file_bytes``, binary files (a NUL
    byte in the first 8 KiB, or mostly undecodable UTF-8), and anything past the corpus caps.
    Every file's real path (``os.path.realpath``, which is what ``Path.resolve()`` does) is
    checked against the allowed roots before it is opened, and it is opened with
    ``O_NOFOLLOW``. Text is decoded as UTF-8 (invalid bytes replaced), ``\\r\\n`` becomes
    ``\\n``, and a non-empty file gets a final ``\\n`` if it lacks one. The corpus is the
    concatenation of the file texts in order; global offsets index into it.

Chunks
    Each file is cut into chunks of at most ``chunk_chars`` characters (4,000), at a line end
    whenever the window holds one (a line longer than a chunk is cut hard). Chunks never span
    files; ids are ``"<path>#<n>"`` with ``n`` counting from 0. Concatenating every chunk in
    order gives the corpus exactly.

Search
    Hits are lines: at most one hit per line, ordered by corpus position, at most
    ``max_results`` (capped at :data:`MAX_RESULTS`). Plain search is a case-sensitive
    substring search (``str.find``, linear) run in-process. A regex (Python ``re``, with
    ``MULTILINE``) runs in a short-lived child interpreter fed only the chunks to search,
    and is killed when the per-search time budget (5 s) runs out, so a catastrophically
    backtracking pattern costs at most that budget. Patterns and queries are at most
    :data:`MAX_QUERY_CHARS` long, and a match never spans two chunks: each ``re`` call sees
    at most one chunk. ``path_glob`` is an ``fnmatch`` glob on the path (a glob without
    ``/`` also matches the file name; ``**/`` may match nothing).
"""

from __future__ import annotations

import bisect
import copy
import difflib
import fnmatch
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.wire.events import ContextChunkRead, ContextPeek, ContextSearch, Payload

CHUNK_CHARS = 4_000
"""Default chunk size, in characters."""
MAX_FILE_BYTES = 1_000_000
"""Default per-file size cap: larger files are skipped."""
MAX_TOTAL_CHARS = 256_000_000
"""Default corpus cap: files past it (in path order) are skipped."""
MAX_FILES = 100_000
"""Default cap on the number of files indexed."""
PEEK_DEFAULT = 2_000
PEEK_MAX = 20_000
"""``peek`` returns at most this many characters (a longer ``length`` is clamped)."""
MAX_RESULTS = 500
"""``search`` returns at most this many hits (a larger ``max_results`` is clamped)."""
SNIPPET_CHARS = 200
"""A hit's snippet is at most this long (a window around the match on its line)."""
MAX_QUERY_CHARS = 1_000
MAX_PATH_CHARS = 1_024
SEARCH_TIME_BUDGET_S = 5.0
"""Default wall-clock budget of one search (a regex child is killed when it runs out)."""
LARGEST_FILES = 10
EXTENSIONS_SHOWN = 30
BINARY_SNIFF_BYTES = 8_192

SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        ".venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
    }
)
"""Directory names never descended into, at any depth."""

FUNCTIONS = ("context.stats", "context.search", "context.peek", "context.read_chunk")

_REQUIRED = object()
_DIGITS = re.compile(r"[0-9]+")
#: Call signatures as the REPL sees them: (name, default) in positional order.
_SIGNATURES: dict[str, tuple[tuple[str, object], ...]] = {
    "context.stats": (),
    "context.search": (
        ("query", _REQUIRED),
        ("regex", False),
        ("max_results", 20),
        ("path_glob", None),
    ),
    "context.peek": (("target", _REQUIRED), ("length", PEEK_DEFAULT)),
    "context.read_chunk": (("chunk_id", _REQUIRED),),
}
_ALIASES: dict[str, dict[str, str]] = {
    "context.peek": {"path_or_offset": "target", "path": "target", "offset": "target"},
}
_USAGE = {
    "context.stats": "context.stats()",
    "context.search": "context.search(query, regex=False, max_results=20, path_glob=None)",
    "context.peek": "context.peek(path_or_offset, length=2000)  # 'src/x.py', 'src/x.py:120' "
    "or an int offset",
    "context.read_chunk": "context.read_chunk(chunk_id)  # e.g. 'src/x.py#0'",
}

# The regex child: reads a JSON header line, then frames "<chunk index> <bytes>\n<utf-8>",
# writes "<chunk index> <char offset>\n" per hit (one per line, in order) and "done".
_REGEX_CHILD = r"""
import json, re, sys
def main():
    rd = sys.stdin.buffer
    header = json.loads(rd.readline())
    rx = re.compile(header["pattern"], re.MULTILINE)
    left = header["max_results"]
    out = sys.stdout
    while left > 0:
        frame = rd.readline()
        if not frame:
            break
        index, size = frame.split()
        text = rd.read(int(size)).decode("utf-8")
        end = len(text)
        pos = 0
        while pos < end and left > 0:
            match = rx.search(text, pos)
            if match is None or match.start() >= end:
                break
            start = match.start()
            out.write(f"{int(index)} {start}\n")
            left -= 1
            newline = text.find("\n", start)
            if newline < 0:
                break
            pos = newline + 1
    out.write("done\n")
    out.flush()
main()
"""


class ContextError(ValueError):
    """A context call the model can fix: the message says what was wrong and what to do."""


@dataclass(slots=True)
class _File:
    path: str
    size: int  # bytes on disk
    chars: int
    lines: int
    start: int  # global offset of the file's first character
    first_chunk: int
    n_chunks: int


@dataclass(frozen=True, slots=True)
class _Candidate:
    path: str  # as the model sees it
    real: str  # resolved absolute path, inside the allowed roots
    size: int


def split_chunks(text: str, size: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``size`` chars, at line ends where possible."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    pieces: list[str] = []
    start, total = 0, len(text)
    while start < total:
        end = start + size
        if end < total:
            cut = text.rfind("\n", start, end)
            if cut >= start:
                end = cut + 1
        else:
            end = total
        pieces.append(text[start:end])
        start = end
    return pieces


def _quote(value: object, limit: int = 120) -> str:
    """``repr`` of a caller's value, cut so an error message stays short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalize_text(text: str) -> str:
    text = text.replace("\r\n", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def _decode(data: bytes) -> str | None:
    """The text of a file's bytes, or None when they look binary."""
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") * 50 > len(text):  # over 2 % undecodable: not text
            return None
        return text


def _inside(real: str, roots: Sequence[str]) -> bool:
    for root in roots:
        prefix = root if root.endswith(os.sep) else root + os.sep
        if real == root or real.startswith(prefix):
            return True
    return False


def _glob_matcher(glob: str) -> Callable[[str], bool]:
    patterns = {glob}
    if glob.endswith("/"):
        patterns.add(glob + "*")
    for pattern in list(patterns):
        if "**/" in pattern:
            patterns.add(pattern.replace("**/", ""))
    by_name = "/" not in glob

    def matches(path: str) -> bool:
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            return True
        return by_name and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], glob)

    return matches


def _snippet(line: str, column: int, more_left: bool = False, more_right: bool = False) -> str:
    """At most :data:`SNIPPET_CHARS` of ``line`` around ``column`` ('…' marks cut text)."""
    if len(line) <= SNIPPET_CHARS and not (more_left or more_right):
        return line.strip()
    width = SNIPPET_CHARS - 2
    start = max(0, min(column - width // 4, len(line) - width))
    piece = line[start : start + width]
    left = "…" if start > 0 or more_left else ""
    right = "…" if start + width < len(line) or more_right else ""
    return left + piece + right


class ContextStore:
    """A read-only, in-memory snapshot of the text under some roots, indexed on first use.

    ``roots`` are the directories the run reads; each must resolve inside one of
    ``allowed_roots`` (``paths.allowed_roots``: the repo root by default). Construction
    does no file I/O beyond resolving the roots; the first call indexes.
    """

    def __init__(
        self,
        roots: Sequence[Path | str],
        allowed_roots: Sequence[Path | str],
        *,
        chunk_chars: int = CHUNK_CHARS,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_total_chars: int = MAX_TOTAL_CHARS,
        max_files: int = MAX_FILES,
        skip_dirs: Iterable[str] = SKIP_DIRS,
        search_time_budget_s: float = SEARCH_TIME_BUDGET_S,
    ) -> None:
        if chunk_chars < 1:
            raise ValueError("chunk_chars must be at least 1")
        self.chunk_chars = chunk_chars
        self.max_file_bytes = max_file_bytes
        self.max_total_chars = max_total_chars
        self.max_files = max_files
        self.skip_dirs = frozenset(skip_dirs)
        self.search_time_budget_s = search_time_budget_s
        self._allowed = [str(Path(root).resolve()) for root in allowed_roots]
        self._roots = self._resolve_roots(roots)
        self._texts: Mapping[str, str] | None = None
        self._lock = threading.Lock()
        self._indexed = False
        self.index_duration_ms = 0
        self._reset()

    def _reset(self) -> None:
        """Empty index state (filled by :meth:`_index`)."""
        self._files: list[_File] = []
        self._by_path: dict[str, int] = {}
        self._chunks: list[str] = []
        self._chunk_file: list[int] = []
        self._chunk_start: list[int] = []
        self._chunk_line: list[int] = []
        self._skipped: dict[str, str] = {}
        self._skip_counts: Counter[str] = Counter()
        self._truncated = False
        self._stats: dict[str, Any] = {}
        self._total_chars = 0

    @classmethod
    def from_texts(
        cls,
        texts: Mapping[str, str],
        *,
        chunk_chars: int = CHUNK_CHARS,
        search_time_budget_s: float = SEARCH_TIME_BUDGET_S,
    ) -> ContextStore:
        """A store over in-memory texts keyed by relative POSIX path (no disk access)."""
        store = cls([], [], chunk_chars=chunk_chars, search_time_budget_s=search_time_budget_s)
        clean: dict[str, str] = {}
        for path, text in texts.items():
            # Lone surrogates cannot be encoded (nor sent to the regex child): replace them.
            clean[store._clean_path(path)] = text.encode("utf-8", "replace").decode("utf-8")
        store._texts = clean
        return store

    # -- roots and indexing ------------------------------------------------------------------

    def _resolve_roots(self, roots: Sequence[Path | str]) -> list[tuple[str, str]]:
        """(label, resolved path) per root; nested or repeated roots are dropped."""
        resolved: list[str] = []
        for root in roots:
            try:
                resolved_root = Path(root).resolve(strict=True)
            except OSError as error:
                raise ContextError(f"context root {str(root)!r} does not exist") from error
            if not resolved_root.is_dir():
                raise ContextError(f"context root {str(root)!r} is not a directory")
            if not _inside(str(resolved_root), self._allowed):
                raise ContextError(
                    f"context root {str(root)!r} is outside paths.allowed_roots "
                    f"({', '.join(self._allowed) or 'none configured'})"
                )
            resolved.append(str(resolved_root))
        kept = [
            real
            for index, real in enumerate(resolved)
            if real not in resolved[:index]
            and not any(other != real and _inside(real, [other]) for other in resolved)
        ]
        if len(kept) == 1:
            return [(".", kept[0])]
        labels: list[tuple[str, str]] = []
        used: set[str] = set()
        for real in kept:
            base = Path(real).name or "root"
            label, n = base, 2
            while label in used:
                label, n = f"{base}~{n}", n + 1
            used.add(label)
            labels.append((label, real))
        return labels

    def ensure_indexed(self) -> None:
        """Build the snapshot now (every other call does this on first use)."""
        if self._indexed:
            return
        with self._lock:
            if not self._indexed:
                started = time.monotonic()
                try:
                    self._index()
                except BaseException:
                    self._reset()
                    raise
                self.index_duration_ms = int((time.monotonic() - started) * 1000)
                self._indexed = True

    def _index(self) -> None:
        if self._texts is not None:
            items: Iterable[tuple[str, int, str | None]] = (
                (path, len(text.encode("utf-8")), text)
                for path, text in sorted(self._texts.items())
            )
        else:
            items = self._read_all(sorted(self._walk(), key=lambda c: c.path))
        for path, size, raw in items:
            if raw is None:
                continue
            if len(self._files) >= self.max_files:
                self._skip(path, "over_file_cap")
                self._truncated = True
                continue
            text = _normalize_text(raw)
            if self._total_chars + len(text) > self.max_total_chars:
                self._skip(path, "over_corpus_cap")
                self._truncated = True
                continue
            self._add_file(path, size, text)
        self._stats = self._build_stats()

    def _add_file(self, path: str, size: int, text: str) -> None:
        pieces = split_chunks(text, self.chunk_chars)
        index = len(self._files)
        self._files.append(
            _File(
                path=path,
                size=size,
                chars=len(text),
                lines=text.count("\n"),
                start=self._total_chars,
                first_chunk=len(self._chunks),
                n_chunks=len(pieces),
            )
        )
        self._by_path[path] = index
        offset, line = self._total_chars, 1
        for piece in pieces:
            self._chunks.append(piece)
            self._chunk_file.append(index)
            self._chunk_start.append(offset)
            self._chunk_line.append(line)
            offset += len(piece)
            line += piece.count("\n")
        self._total_chars = offset

    def _skip(self, path: str, reason: str) -> None:
        self._skip_counts[reason] += 1
        self._skipped[path] = reason

    def _walk(self) -> Iterable[_Candidate]:
        for label, root in self._roots:
            stack = [(root, "" if label == "." else label + "/")]
            while stack:
                directory, prefix = stack.pop()
                try:
                    with os.scandir(directory) as scan:
                        entries = list(scan)
                except OSError:
                    self._skip(prefix.rstrip("/") or ".", "unreadable")
                    continue
                for entry in entries:
                    rel = prefix + entry.name
                    try:
                        candidate = self._classify(entry, rel, stack)
                    except OSError:
                        self._skip(rel, "unreadable")
                        continue
                    if candidate is not None:
                        yield candidate

    def _classify(
        self, entry: os.DirEntry[str], rel: str, stack: list[tuple[str, str]]
    ) -> _Candidate | None:
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            if not _inside(real, self._allowed):
                self._skip(rel, "symlink_outside_allowed_roots")
                return None
            info = Path(real).stat()
            if stat.S_ISDIR(info.st_mode):
                self._skip(rel, "symlinked_dir")
                return None
            if not stat.S_ISREG(info.st_mode):
                self._skip(rel, "special_file")
                return None
            return self._sized(rel, real, info.st_size)
        if entry.is_dir(follow_symlinks=False):
            if entry.name in self.skip_dirs:
                self._skip(rel, "excluded_dir")
            else:
                stack.append((entry.path, rel + "/"))
            return None
        if not entry.is_file(follow_symlinks=False):
            self._skip(rel, "special_file")
            return None
        real = os.path.realpath(entry.path)  # what Path.resolve() does; checked, never assumed
        if not _inside(real, self._allowed):
            self._skip(rel, "outside_allowed_roots")
            return None
        return self._sized(rel, real, entry.stat(follow_symlinks=False).st_size)

    def _sized(self, rel: str, real: str, size: int) -> _Candidate | None:
        if size > self.max_file_bytes:
            self._skip(rel, "too_large")
            return None
        return _Candidate(rel, real, size)

    def _read_all(self, candidates: list[_Candidate]) -> Iterable[tuple[str, int, str | None]]:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        for candidate in candidates:
            if len(self._files) >= self.max_files:
                self._skip(candidate.path, "over_file_cap")
                self._truncated = True
                continue
            try:
                fd = os.open(candidate.real, flags)
            except OSError:
                self._skip(candidate.path, "unreadable")
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    self._skip(candidate.path, "special_file")
                    continue
                data = self._read_fd(fd)
            except OSError:
                self._skip(candidate.path, "unreadable")
                continue
            finally:
                os.close(fd)
            if len(data) > self.max_file_bytes:
                self._skip(candidate.path, "too_large")
                continue
            text = _decode(data)
            if text is None:
                self._skip(candidate.path, "binary")
                continue
            yield candidate.path, len(data), text

    def _read_fd(self, fd: int) -> bytes:
        parts: list[bytes] = []
        left = self.max_file_bytes + 1
        while left > 0:
            part = os.read(fd, min(left, 1 << 20))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def _build_stats(self) -> dict[str, Any]:
        extensions: Counter[str] = Counter()
        for entry in self._files:
            name = entry.path.rsplit("/", 1)[-1]
            dot = name.rfind(".")
            extensions[name[dot:].lower() if dot > 0 else "(none)"] += 1
        ranked = sorted(extensions.items(), key=lambda item: (-item[1], item[0]))
        histogram = dict(ranked[:EXTENSIONS_SHOWN])
        if len(ranked) > EXTENSIONS_SHOWN:
            histogram["(other)"] = sum(count for _, count in ranked[EXTENSIONS_SHOWN:])
        largest = sorted(self._files, key=lambda f: (-f.size, f.path))[:LARGEST_FILES]
        return {
            "roots": [label for label, _ in self._roots] if self._roots else ["."],
            "files": len(self._files),
            "bytes": sum(entry.size for entry in self._files),
            "chars": self._total_chars,
            "lines": sum(entry.lines for entry in self._files),
            "chunks": len(self._chunks),
            "chunk_chars": self.chunk_chars,
            "chunk_id_example": self._example_chunk_id(),
            "largest_files": [
                {"path": f.path, "bytes": f.size, "lines": f.lines, "chunks": f.n_chunks}
                for f in largest
            ],
            "extensions": histogram,
            "skipped": dict(sorted(self._skip_counts.items())),
            "truncated": self._truncated,
            "limits": {
                "max_file_bytes": self.max_file_bytes,
                "peek_max_chars": PEEK_MAX,
                "search_max_results": MAX_RESULTS,
                "snippet_chars": SNIPPET_CHARS,
                "search_time_budget_s": self.search_time_budget_s,
            },
        }

    def _example_chunk_id(self) -> str:
        for entry in self._files:
            if entry.n_chunks:
                return f"{entry.path}#0"
        return "src/app.py#0"

    # -- public calls ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Overview: files, bytes, chars, lines, chunks, roots, largest files, extensions."""
        self.ensure_indexed()
        return copy.deepcopy(self._stats)

    def search(
        self,
        query: str,
        *,
        regex: bool = False,
        max_results: int = 20,
        path_glob: str | None = None,
    ) -> list[dict[str, Any]]:
        """Lines matching ``query``: ``{path, line, chunk_id, offset, snippet}`` each."""
        if not isinstance(query, str):
            raise ContextError(f"query must be a string, not {type(query).__name__}")
        if not query:
            raise ContextError("query is empty; pass the text (or regex=True pattern) to find")
        if len(query) > MAX_QUERY_CHARS:
            raise ContextError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if not isinstance(regex, bool):
            raise ContextError(f"regex must be True or False, not {_quote(regex)}")
        if isinstance(max_results, bool) or not isinstance(max_results, int):
            raise ContextError(f"max_results must be an int, not {type(max_results).__name__}")
        if max_results < 1:
            raise ContextError(f"max_results must be at least 1 (got {max_results})")
        limit = min(max_results, MAX_RESULTS)
        if path_glob is not None:
            if not isinstance(path_glob, str):
                raise ContextError(
                    f"path_glob must be a string like '*.py' or 'src/**', "
                    f"not {type(path_glob).__name__}"
                )
            if len(path_glob) > MAX_PATH_CHARS:
                raise ContextError(f"path_glob is longer than {MAX_PATH_CHARS} characters")
        if regex:
            try:
                re.compile(query, re.MULTILINE)
            except (re.error, RecursionError, OverflowError, ValueError) as error:
                reason = str(error) if isinstance(error, re.error) else "too deeply nested or large"
                raise ContextError(
                    f"invalid regex {_quote(query)}: {reason}; pass regex=False for a plain "
                    f"substring search"
                ) from None
        self.ensure_indexed()
        chunks = self._chunks_for(path_glob)
        deadline = time.monotonic() + self.search_time_budget_s
        if regex:
            raw = self._regex_hits(query, chunks, limit)
        else:
            raw = self._plain_hits(query, chunks, limit, deadline)
        return self._hits(raw)[:limit]

    def peek(self, target: str | int, length: int = PEEK_DEFAULT) -> str:
        """Up to ``length`` chars (at most :data:`PEEK_MAX`) from a path, ``path:line`` or a
        global offset. A path peek stays inside its file; an offset peek may run on."""
        if isinstance(length, bool) or not isinstance(length, int):
            raise ContextError(f"length must be an int, not {type(length).__name__}")
        if length < 1:
            raise ContextError(f"length must be at least 1 (got {length})")
        length = min(length, PEEK_MAX)
        self.ensure_indexed()
        if isinstance(target, int) and not isinstance(target, bool):
            return self._peek_offset(target, length)
        if not isinstance(target, str):
            raise ContextError(
                "target must be a path ('src/x.py'), a path and line ('src/x.py:120') or an "
                f"int character offset, not {type(target).__name__}"
            )
        file_index, line = self._resolve_target(target)
        entry = self._files[file_index]
        start = 0 if line is None else self._line_offset(entry, line)
        return self._read_range(entry, start, length)

    def read_chunk(self, chunk_id: str) -> str:
        """The full text of one chunk (ids come from ``search`` hits: ``'src/x.py#0'``)."""
        return self._chunks[self._chunk_index(chunk_id)]

    def iter_chunks(self) -> Iterable[tuple[str, int, str]]:
        """(chunk id, global offset, text) for every chunk, in corpus order."""
        self.ensure_indexed()
        for index, text in enumerate(self._chunks):
            entry = self._files[self._chunk_file[index]]
            yield f"{entry.path}#{index - entry.first_chunk}", self._chunk_start[index], text

    # -- the host's entry point --------------------------------------------------------------

    def dispatch(
        self, fn: str, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[Any, Payload | None]:
        """Serve one ``context.*`` call from the REPL: (JSON-ready value, event payload).

        Any wrong call (unknown function, bad argument names, counts or types, unknown paths
        or chunk ids) raises :class:`ContextError` with a message the model can act on.
        """
        if not isinstance(fn, str) or fn not in _SIGNATURES:
            raise ContextError(f"unknown function {fn!r}; available: {', '.join(FUNCTIONS)}")
        bound = self._bind(fn, args, kwargs)
        if fn == "context.stats":
            return self.stats(), None
        if fn == "context.search":
            started = time.monotonic()
            hits = self.search(
                bound["query"],
                regex=bound["regex"],
                max_results=bound["max_results"],
                path_glob=bound["path_glob"],
            )
            duration_ms = int((time.monotonic() - started) * 1000)
            query = bound["query"]
            return hits, ContextSearch(
                query_chars=len(query), hits=len(hits), duration_ms=duration_ms
            )
        if fn == "context.peek":
            target, length = bound["target"], bound["length"]
            text = self.peek(target, length)
            reference = str(target) if isinstance(target, str) else f"@{target}"
            return text, ContextPeek(target=reference, length=length, returned_chars=len(text))
        chunk_id = bound["chunk_id"]
        text = self.read_chunk(chunk_id)
        return text, ContextChunkRead(chunk_id=chunk_id, chars=len(text))

    @staticmethod
    def _bind(fn: str, args: Any, kwargs: Any) -> dict[str, Any]:
        usage = f"usage: {_USAGE[fn]}"
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise ContextError(f"{fn}(): malformed call; {usage}")
        params = _SIGNATURES[fn]
        if len(args) > len(params):
            raise ContextError(
                f"{fn}() takes at most {len(params)} argument(s), got {len(args)}; {usage}"
            )
        bound: dict[str, Any] = {
            name: value for (name, _), value in zip(params, args, strict=False)
        }
        names = {name for name, _ in params}
        aliases = _ALIASES.get(fn, {})
        for key, value in kwargs.items():
            name = aliases.get(key, key) if isinstance(key, str) else key
            if name not in names:
                raise ContextError(
                    f"{fn}() got an unexpected keyword argument {_quote(key)}; {usage}"
                )
            if name in bound:
                raise ContextError(f"{fn}() got multiple values for {name!r}; {usage}")
            bound[name] = value
        for name, default in params:
            if name not in bound:
                if default is _REQUIRED:
                    raise ContextError(f"{fn}() is missing the argument {name!r}; {usage}")
                bound[name] = default
        return bound

    # -- paths, chunks, ranges ---------------------------------------------------------------

    @staticmethod
    def _clean_path(path: str) -> str:
        if not isinstance(path, str):
            raise ContextError(f"a path must be a string, not {type(path).__name__}")
        if not path or not path.strip():
            raise ContextError("the path is empty; use a path from context.stats() or search()")
        if len(path) > MAX_PATH_CHARS or "\0" in path:
            raise ContextError("that is not a usable path (too long or contains NUL)")
        if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:[\\/]", path):
            raise ContextError(
                f"{_quote(path)} is an absolute path; use paths relative to the context roots, as "
                "context.search() hits and context.stats() show them (e.g. 'src/app.py')"
            )
        parts = [part for part in path.split("/") if part not in {"", "."}]
        if ".." in parts:
            raise ContextError(
                f"{_quote(path)} leaves the context roots ('..' is not allowed); use paths "
                "relative to the roots, as context.search() hits show them"
            )
        if not parts:
            raise ContextError(f"{_quote(path)} names no file; use a path like 'src/app.py'")
        return "/".join(parts)

    def _file_index(self, raw: str) -> int:
        path = self._clean_path(raw)
        index = self._by_path.get(path)
        if index is not None:
            return index
        reason = self._skipped.get(path)
        if reason is None:
            for parent in _parents(path):
                if self._skipped.get(parent) in _DIR_REASONS:
                    reason = self._skipped[parent]
                    path = parent
                    break
        if reason is not None:
            raise ContextError(
                f"{_quote(path)} is not in the context: {_REASONS.get(reason, reason)}"
            )
        raise ContextError(f"no file {_quote(path)} in the context{self._suggest(path)}")

    def _suggest(self, path: str) -> str:
        name = path.rsplit("/", 1)[-1]
        same_name = [f.path for f in self._files if f.path.rsplit("/", 1)[-1] == name][:3]
        close = same_name or difflib.get_close_matches(path, list(self._by_path), n=3, cutoff=0.6)
        if close:
            return "; did you mean " + " or ".join(repr(item) for item in close) + "?"
        return "; use context.search() or context.stats() to find paths"

    def _resolve_target(self, target: str) -> tuple[int, int | None]:
        """(file index, 1-based line or None) for ``'path'`` or ``'path:line'``."""
        if len(target) > MAX_PATH_CHARS:
            raise ContextError(f"target is longer than {MAX_PATH_CHARS} characters")
        whole = self._clean_path(target)
        if whole in self._by_path:  # a path whose name has a colon still works
            return self._by_path[whole], None
        head, sep, tail = target.rpartition(":")
        if sep and head and _DIGITS.fullmatch(tail.strip()):
            return self._file_index(head), int(tail.strip())
        if _DIGITS.fullmatch(target.strip()):
            raise ContextError(
                f"{_quote(target)} is not a path in the context; to peek at a character offset "
                f"pass an int: context.peek({target.strip()})"
            )
        return self._file_index(target), None

    def _line_offset(self, entry: _File, line: int) -> int:
        if line < 1 or line > entry.lines:
            span = f"lines 1..{entry.lines}" if entry.lines else "no lines (it is empty)"
            raise ContextError(f"{entry.path!r} has {span}; line {line} is out of range")
        if line == 1:
            return 0
        # The line starts right after the file's (line-1)-th newline, which lies in the last
        # chunk whose first line is <= line-1 (chunks of one long line share a first line).
        first, last = entry.first_chunk, entry.first_chunk + entry.n_chunks
        index = bisect.bisect_right(self._chunk_line, line - 1, first, last) - 1
        text = self._chunks[index]
        pos = -1
        for _ in range(line - self._chunk_line[index]):
            pos = text.find("\n", pos + 1)
        return self._chunk_start[index] + pos + 1 - entry.start

    def _read_range(self, entry: _File, start: int, length: int) -> str:
        """Up to ``length`` chars of ``entry`` from file-relative offset ``start``."""
        end = min(entry.chars, start + length)
        return self._corpus_slice(entry.start + start, entry.start + end)

    def _corpus_slice(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        index = bisect.bisect_right(self._chunk_start, start) - 1
        parts: list[str] = []
        while index < len(self._chunks) and self._chunk_start[index] < end:
            base = self._chunk_start[index]
            text = self._chunks[index]
            parts.append(text[max(0, start - base) : end - base])
            index += 1
        return "".join(parts)

    def _peek_offset(self, offset: int, length: int) -> str:
        if offset < 0 or offset >= self._total_chars:
            if self._total_chars == 0:
                raise ContextError("the context is empty; there is nothing to peek at")
            raise ContextError(
                f"offset {offset} is outside the corpus: valid offsets are "
                f"0..{self._total_chars - 1} (context.stats()['chars'] characters)"
            )
        return self._corpus_slice(offset, min(self._total_chars, offset + length))

    def _chunk_index(self, chunk_id: str) -> int:
        if not isinstance(chunk_id, str):
            raise ContextError(
                f"chunk_id must be a string like 'src/app.py#0', not {type(chunk_id).__name__}"
            )
        self.ensure_indexed()
        example = self._example_chunk_id()
        if len(chunk_id) > MAX_PATH_CHARS + 12:
            raise ContextError(f"chunk_id is too long; ids look like {example!r}")
        path, sep, number = chunk_id.rpartition("#")
        if not sep or not path or not _DIGITS.fullmatch(number) or len(number) > 12:
            raise ContextError(
                f"no such chunk {_quote(chunk_id)}: chunk ids look like {example!r} (a path, '#', "
                "a chunk number from 0); call context.search() first and use a hit's chunk_id"
            )
        try:
            entry = self._files[self._file_index(path)]
        except ContextError as error:
            raise ContextError(f"no such chunk {_quote(chunk_id)}: {error}") from None
        n = int(number)
        if n >= entry.n_chunks:
            span = (
                f"has {entry.n_chunks} chunk(s) (#0..#{entry.n_chunks - 1})"
                if entry.n_chunks
                else "is empty and has no chunks"
            )
            raise ContextError(f"no such chunk {_quote(chunk_id)}: {entry.path!r} {span}")
        return entry.first_chunk + n

    # -- search internals --------------------------------------------------------------------

    def _chunks_for(self, path_glob: str | None) -> list[int]:
        if path_glob is None:
            return list(range(len(self._chunks)))
        matches = _glob_matcher(path_glob)
        selected: list[int] = []
        for entry in self._files:
            if matches(entry.path):
                selected.extend(range(entry.first_chunk, entry.first_chunk + entry.n_chunks))
        return selected

    def _plain_hits(
        self, query: str, chunks: list[int], limit: int, deadline: float
    ) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        for index in chunks:
            if time.monotonic() > deadline:
                raise self._timeout(query, regex=False)
            text = self._chunks[index]
            pos = text.find(query)
            while pos >= 0:
                found.append((index, pos))
                if len(found) >= limit + 1:  # +1: a duplicate line may be dropped later
                    return found
                newline = text.find("\n", pos)
                if newline < 0:
                    break
                pos = text.find(query, newline + 1)
        return found

    def _regex_hits(self, pattern: str, chunks: list[int], limit: int) -> list[tuple[int, int]]:
        if not chunks:
            return []
        header = json.dumps({"pattern": pattern, "max_results": limit + 1}).encode() + b"\n"
        frames = [header]
        for index in chunks:
            data = self._chunks[index].encode("utf-8")
            frames.append(b"%d %d\n" % (index, len(data)))
            frames.append(data)
        command = [sys.executable, "-I", "-S", "-B", "-c", _REGEX_CHILD]
        try:
            done = subprocess.run(
                command,
                input=b"".join(frames),
                capture_output=True,
                timeout=self.search_time_budget_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise self._timeout(pattern, regex=True) from None
        lines = done.stdout.decode("ascii", errors="replace").splitlines()
        if done.returncode != 0 or not lines or lines[-1] != "done":
            detail = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
            raise ContextError(
                f"regex search failed ({detail[-1] if detail else f'exit {done.returncode}'}); "
                "try a simpler pattern or a plain search"
            )
        found: list[tuple[int, int]] = []
        for reply in lines[:-1]:
            chunk, _, pos = reply.partition(" ")
            found.append((int(chunk), int(pos)))
        return found

    def _timeout(self, query: str, *, regex: bool) -> ContextError:
        what = "regex" if regex else "search"
        advice = (
            "the pattern probably backtracks heavily: avoid nested or adjacent unbounded "
            r"quantifiers such as (a+)+ or \w+\s*\w+, anchor it or make it more literal, "
            "narrow path_glob, or use a plain search"
            if regex
            else "narrow path_glob or use a more specific query"
        )
        return ContextError(
            f"{what} {_quote(query, 80)} ran out of its {self.search_time_budget_s:g} s time "
            f"budget; {advice}"
        )

    def _hits(self, raw: list[tuple[int, int]]) -> list[dict[str, Any]]:
        hits: list[dict[str, Any]] = []
        last: tuple[int, int] | None = None
        for index, pos in raw:
            file_index = self._chunk_file[index]
            entry = self._files[file_index]
            text = self._chunks[index]
            line = self._chunk_line[index] + text.count("\n", 0, pos)
            if last == (file_index, line):  # a line cut across two chunks
                continue
            last = (file_index, line)
            offset = self._chunk_start[index] + pos
            hits.append(
                {
                    "path": entry.path,
                    "line": line,
                    "chunk_id": f"{entry.path}#{index - entry.first_chunk}",
                    "offset": offset,
                    "snippet": self._snippet_at(entry, offset),
                }
            )
        return hits

    def _snippet_at(self, entry: _File, offset: int) -> str:
        """The snippet of the line holding global ``offset`` (a line may span chunks)."""
        end = entry.start + entry.chars
        low = max(entry.start, offset - SNIPPET_CHARS)
        high = min(end, offset + SNIPPET_CHARS)
        window = self._corpus_slice(low, high)
        column = offset - low
        line_start = window.rfind("\n", 0, column) + 1
        line_end = window.find("\n", column)
        if line_end < 0:
            line_end = len(window)
        more_left = line_start == 0 and low > entry.start
        more_left = more_left and self._corpus_slice(low - 1, low) != "\n"
        more_right = line_end == len(window) and high < end
        more_right = more_right and self._corpus_slice(high, high + 1) != "\n"
        return _snippet(window[line_start:line_end], column - line_start, more_left, more_right)


_REASONS = {
    "binary": "it is a binary file",
    "too_large": "it is larger than the per-file size cap",
    "symlink_outside_allowed_roots": "it is a symlink that resolves outside the allowed roots",
    "outside_allowed_roots": "it resolves outside the allowed roots",
    "symlinked_dir": "symlinked directories are not followed",
    "excluded_dir": "this directory is excluded from the context",
    "special_file": "it is not a regular file",
    "unreadable": "it could not be read",
    "over_file_cap": "the context hit its file-count cap before it",
    "over_corpus_cap": "the context hit its size cap before it",
}


_DIR_REASONS = frozenset(
    {"excluded_dir", "symlinked_dir", "symlink_outside_allowed_roots", "unreadable"}
)


def _parents(path: str) -> Iterable[str]:
    parts = path.split("/")
    for end in range(len(parts) - 1, 0, -1):
        yield "/".join(parts[:end])
