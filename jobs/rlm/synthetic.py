"""A deterministic synthetic repository for RLM tests and benchmarks.

:func:`make_corpus` writes a tree of realistic-looking files (Python, JavaScript, Markdown,
TOML/JSON config) from a seed, optionally plants *needles* (whole lines with known text) at
known places, and returns where everything is: the ground truth for needle-in-a-haystack
and aggregation tests (e.g. "list every TODO owner").

The same seed and arguments always give byte-identical files, on any platform and Python
version: only ``random.Random.random()`` is used (its sequence is guaranteed stable), never
``choice``/``randrange``/``shuffle``, hash order or the clock.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

_DIRS = (
    "src/core",
    "src/api",
    "src/util",
    "src/storage",
    "lib",
    "tests",
    "docs",
    "scripts",
    "config",
    "web/static",
)
_NOUNS = (
    "user", "order", "invoice", "session", "token", "report", "ledger", "widget", "cache",
    "queue", "event", "record", "account", "payment", "config", "buffer", "message", "route",
    "schema", "client", "server", "worker", "batch", "metric", "profile", "license", "tenant",
    "snapshot", "cursor", "digest",
)  # fmt: skip
_VERBS = (
    "load", "save", "parse", "render", "build", "fetch", "apply", "merge", "validate", "sync",
    "resolve", "encode", "decode", "compute", "flush", "refresh", "register", "publish",
    "collect", "normalize",
)  # fmt: skip
_ADJ = (
    "fast", "stale", "pending", "remote", "local", "cached", "partial", "default", "legacy",
    "primary", "shadow", "frozen",
)  # fmt: skip
_MODULES = (
    "os", "json", "re", "time", "logging", "pathlib", "typing", "dataclasses", "itertools",
    "functools", "collections", "hashlib",
)  # fmt: skip
_OWNERS = ("alice", "bob", "carol", "dave", "erin", "frank")
_WORDS = (
    "the", "a", "this", "each", "every", "when", "before", "after", "then", "value", "list",
    "returns", "handles", "checks", "stores", "keeps", "skips", "retries", "only", "never",
    "also", "first", "last", "empty", "missing", "large", "small", "request", "response",
    "file", "line", "limit", "timeout", "error", "result", "field", "index", "key", "entry",
)  # fmt: skip
_KINDS = (  # (extension, weight)
    (".py", 45),
    (".md", 15),
    (".js", 12),
    (".ts", 8),
    (".toml", 6),
    (".json", 6),
    (".txt", 4),
    (".yaml", 4),
)
TODO = re.compile(r"TODO\((\w+)\)")


class _Gen:
    """Draws from one seeded stream using only ``random()``."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 (test data, not secrets)

    def unit(self) -> float:
        return self._rng.random()

    def below(self, n: int) -> int:
        return min(int(self._rng.random() * n), n - 1)

    def pick(self, items: Sequence[str]) -> str:
        return items[self.below(len(items))]

    def num(self) -> int:
        return self.below(10_000)

    def name(self) -> str:
        return f"{self.pick(_VERBS)}_{self.pick(_NOUNS)}"

    def camel(self) -> str:
        return self.pick(_VERBS) + self.pick(_NOUNS).capitalize()

    def var(self) -> str:
        return f"{self.pick(_ADJ)}_{self.pick(_NOUNS)}"

    def sentence(self, words: int = 0) -> str:
        count = words or 4 + self.below(8)
        text = " ".join(self.pick(_WORDS) for _ in range(count))
        return text[0].upper() + text[1:] + "."


def _python_line(g: _Gen) -> str:
    roll = g.below(12)
    if roll == 0:
        return f"def {g.name()}({g.var()}, {g.pick(_NOUNS)}_id: int = {g.num()}):"
    if roll == 1:
        return f"class {g.pick(_NOUNS).capitalize()}{g.pick(_NOUNS).capitalize()}:"
    if roll == 2:
        return f"import {g.pick(_MODULES)}"
    if roll == 3:
        return f"    # {g.sentence()}"
    if roll == 4:
        return f"    if {g.var()} > {g.num()}:"
    if roll == 5:
        return f"        return {g.var()} + {g.num()}"
    if roll == 6:
        return ""
    if roll == 7:
        return f'    """{g.sentence()}"""'
    if roll == 8:
        return f"    for {g.pick(_NOUNS)} in {g.var()}s:"
    return f"    {g.var()} = {g.name()}({g.var()}, {g.num()})"


def _js_line(g: _Gen) -> str:
    roll = g.below(8)
    if roll == 0:
        return f"export function {g.camel()}({g.pick(_NOUNS)}, options = {{}}) {{"
    if roll == 1:
        return "}"
    if roll == 2:
        return f"  // {g.sentence()}"
    if roll == 3:
        return f"  if ({g.pick(_NOUNS)}.length > {g.num()}) return null;"
    if roll == 4:
        return ""
    return f"  const {g.camel()} = await {g.camel()}({g.pick(_NOUNS)}, {g.num()});"


def _markdown_line(g: _Gen) -> str:
    roll = g.below(8)
    if roll == 0:
        return f"## {g.pick(_VERBS).capitalize()} the {g.pick(_NOUNS)} → {g.pick(_ADJ)} café"
    if roll == 1:
        return ""
    if roll == 2:
        return f"- `{g.name()}()` {g.sentence(5)}"
    return g.sentence(8 + g.below(10))


def _config_line(g: _Gen, ext: str) -> str:
    key = g.var()
    if ext == ".json":
        return f'  "{key}": {g.num()},'
    if ext == ".yaml":
        return f"{key}: {g.pick(_ADJ)}-{g.num()}"
    if g.below(10) == 0:
        return f"[{g.pick(_NOUNS)}.{g.pick(_ADJ)}]"
    return f'{key} = "{g.pick(_ADJ)}-{g.num()}"'


def _todo_line(g: _Gen, ext: str) -> str:
    mark = {".py": "#", ".js": "//", ".ts": "//", ".toml": "#", ".yaml": "#"}.get(ext, "")
    prefix = f"    {mark} " if mark else ""
    return f"{prefix}TODO({g.pick(_OWNERS)}): {g.pick(_VERBS)} the {g.pick(_NOUNS)} {g.sentence(3)}"


def _line_maker(ext: str) -> Callable[[_Gen], str]:
    if ext == ".py":
        return _python_line
    if ext in {".js", ".ts"}:
        return _js_line
    if ext in {".md", ".txt"}:
        return _markdown_line
    return lambda g: _config_line(g, ext)


def _pick_kind(g: _Gen) -> str:
    total = sum(weight for _, weight in _KINDS)
    roll = g.below(total)
    for ext, weight in _KINDS:
        if roll < weight:
            return ext
        roll -= weight
    return _KINDS[0][0]


def make_corpus(
    root: Path,
    *,
    seed: int,
    files: int,
    lines_per_file: int,
    needles: Mapping[str, str] | None = None,
    todo_rate: float = 0.01,
) -> dict[str, Any]:
    """Write a deterministic synthetic repository under ``root`` and describe it.

    Each file has exactly ``lines_per_file`` lines (each ending in ``\\n``). A needle
    ``name -> text`` replaces one line (1-based ``line``) of a file chosen by the seed;
    its text must be one line and must not occur anywhere else in the corpus (else
    ``ValueError``). About ``todo_rate`` of lines are ``TODO(owner): ...`` lines.

    Returns ``{"root", "files" (sorted relative paths), "bytes", "lines", "extensions"
    (ext -> file count), "needles" (name -> {"path", "line", "text"}), "todos" (sorted
    [{"path", "line", "owner"}])}``.
    """
    if files < 1 or lines_per_file < 1:
        raise ValueError("files and lines_per_file must be at least 1")
    planted = dict(needles or {})
    for name, text in planted.items():
        if not text or "\n" in text or "\r" in text:
            raise ValueError(f"needle {name!r} must be one non-empty line of text")
    if len(planted) > files * lines_per_file:
        raise ValueError("more needles than lines in the corpus")

    g = _Gen(seed)
    contents: dict[str, list[str]] = {}
    for index in range(files):
        ext = _pick_kind(g)
        directory = _DIRS[g.below(len(_DIRS))]
        stem = f"test_{g.name()}" if directory == "tests" else g.name()
        path = f"{directory}/{stem}_{index:05d}{ext}"
        make = _line_maker(ext)
        lines = []
        for _ in range(lines_per_file):
            lines.append(_todo_line(g, ext) if g.unit() < todo_rate else make(g))
        contents[path] = lines

    paths = sorted(contents)
    where: dict[str, dict[str, Any]] = {}
    taken: set[tuple[str, int]] = set()
    for name in sorted(planted):
        while True:
            path = paths[g.below(len(paths))]
            line = 1 + g.below(lines_per_file)
            if (path, line) not in taken:
                break
        taken.add((path, line))
        contents[path][line - 1] = planted[name]
        where[name] = {"path": path, "line": line, "text": planted[name]}

    texts = {path: "\n".join(contents[path]) + "\n" for path in paths}
    for name, text in planted.items():
        occurrences = sum(body.count(text) for body in texts.values())
        if occurrences != 1:
            raise ValueError(
                f"needle {name!r} occurs {occurrences} times in the corpus; "
                "use a more distinctive text"
            )

    root.mkdir(parents=True, exist_ok=True)
    total_bytes = 0
    todos: list[dict[str, Any]] = []
    extensions: Counter[str] = Counter()
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = texts[path].encode("utf-8")
        target.write_bytes(data)
        total_bytes += len(data)
        extensions[Path(path).suffix] += 1
        for number, line_text in enumerate(contents[path], start=1):
            match = TODO.search(line_text)
            if match:
                todos.append({"path": path, "line": number, "owner": match.group(1)})
    return {
        "root": str(root),
        "files": paths,
        "bytes": total_bytes,
        "lines": files * lines_per_file,
        "extensions": dict(sorted(extensions.items())),
        "needles": where,
        "todos": todos,
    }
