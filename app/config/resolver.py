"""The one config resolver (DESIGN §6): layers, merge, validation, repo caps, provenance.

Layers, lowest first: built-in ``default`` < ``global`` file < ``repo`` file < ``env``
(``CODEX_DELEGATION_CONFIG_OVERRIDES``) < ``run`` (per-run overrides). Every layer is parsed and
validated into a flat ``{key path: value}`` map first, then the maps are merged (tables merge
because they are flattened to leaves; arrays are leaves, so they replace), then the repo caps
are applied. Any problem raises :class:`ConfigError` before a :class:`ResolvedConfig` exists,
so a config is never partially applied.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from app.config.schema import (
    ENV_VAR,
    GLOBAL_CONFIG_RELPATH,
    KEY_INDEX,
    KEYS,
    PASSTHROUGH_TABLE,
    REPO_CONFIG_RELPATH,
    TABLES,
    KeySpec,
)

KeyPath = tuple[str, ...]

SOURCE_DEFAULT: Final = "built-in"
SOURCE_RUN: Final = "per-run"
REPO_FILE_HINT: Final = f"<repo>/{REPO_CONFIG_RELPATH}"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_QUOTED = re.compile(r""""(?:[^"\\\n]|\\.)*"|'[^'\n]*'""")
_KEY_CHARS_OUTSIDE_QUOTES = re.compile(r"[A-Za-z0-9_.\-\s]*\Z")
_SEPARATORS = ";\n"
_MISSING: Final = object()


# --------------------------------------------------------------------------------------------
# Public result types
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """A config problem, raised before any config is returned.

    Attributes: ``path`` (the file, or the layer's source such as the env var name or
    ``per-run``), ``layer``, ``key`` (dotted, when one is involved), ``expected`` (what a valid
    value looks like), ``message`` (what is wrong) and ``hint`` (how to fix it).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        layer: str | None = None,
        key: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.layer = layer
        self.key = key
        self.expected = expected
        self.hint = hint
        self.where = where or path

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  how to fix: {self.hint}"
        return text


class UnknownKeyError(ConfigError, KeyError):
    """An unknown (or unset passthrough) key was looked up; also a :class:`KeyError`."""


class LayerValue(msgspec.Struct, frozen=True):
    """One layer's setting of a key: which layer, where exactly, and the value it set."""

    layer: str
    source: str
    value: Any


class Provenance(msgspec.Struct, frozen=True):
    """Where a key's effective value came from (the highest layer that set it)."""

    layer: str
    source: str
    value: Any
    narrowed_by_cap: bool = False


class Explanation(msgspec.Struct, frozen=True):
    """Everything about one key: each layer that set it, the cap that limits it, the result."""

    key: str
    value: Any
    layer: str
    source: str
    layers: list[LayerValue]
    cap: str | None = None
    cap_value: Any = None
    cap_source: str | None = None
    narrowed_by_cap: bool = False
    removed: list[Any] = msgspec.field(default_factory=list)
    note: str = ""


# --------------------------------------------------------------------------------------------
# Small helpers: key paths and TOML rendering
# --------------------------------------------------------------------------------------------


def dotted(path: KeyPath) -> str:
    """Render a key path as a dotted key, quoting segments that are not TOML bare keys."""
    return ".".join(p if _BARE_KEY.match(p) else _toml_string(p) for p in path)


def parse_key(text: str) -> KeyPath:
    """Parse a dotted key (``rlm.max_iterations``, ``codex.a."b.c"``) into its segments.

    Raises ``ValueError`` when ``text`` is not a single TOML dotted key.
    """
    text = text.strip()
    parts = text.split(".")
    if text and all(_BARE_KEY.match(p) for p in parts):
        return tuple(parts)
    # Quoted segments: let tomllib do the parsing, but only after making sure nothing outside
    # the quotes could turn "key = 0" into a different document (``=``, ``#``, newlines).
    if not text or not _KEY_CHARS_OUTSIDE_QUOTES.match(_QUOTED.sub("", text)):
        raise ValueError(f"not a dotted key: {text!r}")
    try:
        node: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not a dotted key: {text!r}") from exc
    path: list[str] = []
    while isinstance(node, dict):
        if len(node) != 1:
            raise ValueError(f"not a dotted key: {text!r}")
        ((segment, node),) = node.items()
        path.append(segment)
    return tuple(path)


def _toml_string(text: str) -> str:
    # JSON string escapes are a subset of TOML basic-string escapes, except that TOML also
    # forbids a raw DEL character.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def flatten_dotted(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested tables as ``(dotted.key, leaf value)`` pairs, in order (``prefix`` first)."""
    if isinstance(value, Mapping):
        items: list[tuple[str, Any]] = []
        for key, item in value.items():
            items.extend(flatten_dotted(f"{prefix}.{key}" if prefix else str(key), item))
        return items
    return [(prefix, value)]


def dash_c_overrides(prefix: str, table: Mapping[str, Any]) -> list[str]:
    """``-c key=<toml value>`` arguments for every leaf of ``table`` (the Codex CLI's form)."""
    args: list[str] = []
    for key, value in flatten_dotted(prefix, table):
        args += ["-c", f"{key}={format_toml_value(value)}"]
    return args


def format_toml_value(value: Any) -> str:
    """Render a value as an inline TOML value (the form used in files and ``-c key=value``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{dotted((str(k),))} = {format_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _parse_toml_value(text: str) -> tuple[bool, Any]:
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False, None
    # A value that parses only together with extra lines ("1\nz = 2") is not one value.
    if list(doc) != ["v"]:
        return False, None
    return True, doc["v"]


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _preview(value: object, limit: int = 60) -> str:
    try:
        text = format_toml_value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Entry parsing: CODEX_DELEGATION_CONFIG_OVERRIDES and ``-c key=value``
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverrideEntry:
    """One parsed ``key=value`` entry: the key path, the TOML-or-bare-string value, raw text."""

    number: int
    text: str
    path: KeyPath
    value: Any
    raw_value: str


def _entry_error(number: int, text: str, source: str, layer: str, problem: str) -> ConfigError:
    where = f"{source} entry {number} {text.strip()!r}"
    return ConfigError(
        f"{problem}; expected the form key=value with a dotted key, e.g. rlm.max_iterations=20",
        path=source,
        layer=layer,
        expected="key=value",
        hint="write each entry as key=value (values are TOML, e.g. true, 20, "
        '["a", "b"]; anything else is taken as a plain string)'
        + ("; separate entries with ';' or newlines" if layer == "env" else ""),
        where=where,
    )


def _make_entry(
    number: int, text: str, key_text: str, raw_value: str, *, source: str, layer: str
) -> OverrideEntry:
    if not key_text.strip():
        raise _entry_error(number, text, source, layer, "the key before '=' is empty")
    try:
        path = parse_key(key_text)
    except ValueError:
        raise _entry_error(
            number, text, source, layer, f"{key_text.strip()!r} is not a valid dotted key"
        ) from None
    ok, value = _parse_toml_value(raw_value)
    if not ok:
        value = raw_value.strip()
    return OverrideEntry(number, text, path, value, raw_value.strip())


def parse_override_entries(text: str, *, source: str = ENV_VAR) -> list[OverrideEntry]:
    """Parse ``key=value`` entries separated by ``;`` or newlines (the env layer's format).

    A value runs to the first separator after which it is a valid TOML value, so
    ``a="x;y";b=1`` is two entries; when no such end exists the value is the plain string up
    to the next separator. Blank entries are skipped. Raises :class:`ConfigError` for an
    entry that is not ``key=value``.
    """
    entries: list[OverrideEntry] = []
    pos, end = 0, len(text)
    number = 0
    while pos < end:
        seps = [i for i in range(pos, end) if text[i] in _SEPARATORS]
        first_sep = seps[0] if seps else end
        if not text[pos:first_sep].strip():
            pos = first_sep + 1
            continue
        number += 1
        eq = text.find("=", pos, first_sep)
        if eq < 0:
            raise _entry_error(number, text[pos:first_sep], source, "env", "missing '='")
        value_end = first_sep
        # Only a string, array or inline table can contain ';' or a newline, so only values that
        # start like one are tried past the first separator (keeps bare words linear).
        spans = text[eq + 1 : first_sep].lstrip()[:1] in ('"', "'", "[", "{")
        candidates = [*(s for s in seps if s > eq), end] if spans else [first_sep]
        for candidate in candidates:
            if _parse_toml_value(text[eq + 1 : candidate])[0]:
                value_end = candidate
                break
        entries.append(
            _make_entry(
                number,
                text[pos:value_end],
                text[pos:eq],
                text[eq + 1 : value_end],
                source=source,
                layer="env",
            )
        )
        pos = value_end + 1
    return entries


def parse_run_entries(entries: Iterable[str]) -> list[OverrideEntry]:
    """Parse per-run ``-c key=value`` strings (one entry each; ``;`` is not a separator)."""
    parsed: list[OverrideEntry] = []
    for number, text in enumerate(entries, start=1):
        key_text, eq, raw_value = text.partition("=")
        if not eq:
            raise _entry_error(number, text, SOURCE_RUN, "run", "missing '='")
        parsed.append(
            _make_entry(number, text, key_text, raw_value, source=SOURCE_RUN, layer="run")
        )
    return parsed


# --------------------------------------------------------------------------------------------
# Layer ingestion and validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where values being ingested come from; used for provenance and error messages."""

    layer: str
    source: str
    base_dir: Path | None  # what relative paths are relative to
    repo: Path | None  # the repo root, to name the repo file in hints
    entry: str | None = None  # "entry 2 'k=v'" for env/run entries

    @property
    def is_file(self) -> bool:
        return self.layer in ("global", "repo")

    def where(self) -> str:
        if self.layer == "global":
            return f"global config file {self.source}"
        if self.layer == "repo":
            return f"repo config file {self.source}"
        if self.layer == "env":
            return f"{self.source} {self.entry}" if self.entry else self.source
        if self.layer == "run":
            return f"per-run override {self.entry}" if self.entry else "per-run overrides"
        return "built-in defaults"

    def example(self, key: str, value: str) -> str:
        # Files take TOML assignments; env/run entries take key=value.
        return f"{key} = {value}" if self.is_file else f"{key}={value}"

    def error(self, key: str | None, message: str, expected: str | None, hint: str) -> ConfigError:
        return ConfigError(
            message,
            path=self.source,
            layer=self.layer,
            key=key,
            expected=expected,
            hint=hint,
            where=self.where(),
        )


def _set_leaf(store: dict[KeyPath, Any], path: KeyPath, value: Any) -> list[KeyPath]:
    """Set a leaf; a scalar replaces a table at the same path and vice versa.

    Returns the paths that were dropped because they conflicted.
    """
    n = len(path)
    dropped = [k for k in store if k != path and (k[:n] == path or path[: len(k)] == k)]
    for k in dropped:
        del store[k]
    store[path] = value
    return dropped


def _expected(spec: KeySpec) -> str:
    if spec.type in ("str", "list[str]") and spec.choices is not None:
        allowed = ", ".join(format_toml_value(c) for c in spec.choices)
        if spec.type == "str":
            return f"one of {allowed}"
        return f"an array of strings, each one of {allowed}"
    base = {
        "str": "a string",
        "int": "an integer",
        "float": "a number (float; an integer is accepted)",
        "bool": "a boolean (true or false)",
        "list[str]": "an array of strings",
        "list[path]": "an array of path strings",
    }[spec.type]
    if spec.type in ("int", "float") and (spec.minimum is not None or spec.maximum is not None):
        low = spec.minimum
        high = spec.maximum
        fmt = int if spec.type == "int" else float
        if low is not None and high is not None:
            base += f" from {fmt(low)} to {fmt(high)}"
        elif low is not None:
            base += f" {'>' if spec.exclusive_minimum else '>='} {fmt(low)}"
        elif high is not None:
            base += f" <= {fmt(high)}"
    if spec.min_items:
        base += f" (at least {spec.min_items})"
    return base


def _example_value(spec: KeySpec) -> str:
    if spec.type == "list[path]":
        return '["/path/to/dir"]'
    if spec.choices and spec.type == "str":
        return format_toml_value(spec.choices[0])
    if spec.default in ("", []):
        return '"value"' if spec.type == "str" else '["value"]'
    return format_toml_value(spec.default)


def _bad_value(spec: KeySpec, value: object, origin: _Origin, problem: str) -> ConfigError:
    expected = _expected(spec)
    return origin.error(
        spec.key,
        f"{spec.key}: {problem}; expected {expected}",
        expected,
        f"set it to {expected}, e.g. {origin.example(spec.key, _example_value(spec))}",
    )


def _check_number(spec: KeySpec, value: float, origin: _Origin) -> None:
    number = float(value)
    if not math.isfinite(number):
        raise _bad_value(spec, value, origin, f"got {_preview(value)}, which is not finite")
    too_low = spec.minimum is not None and (
        number <= spec.minimum if spec.exclusive_minimum else number < spec.minimum
    )
    too_high = spec.maximum is not None and number > spec.maximum
    if too_low or too_high:
        raise _bad_value(spec, value, origin, f"got {_preview(value)}, which is out of range")


def _resolve_path_item(spec: KeySpec, item: object, origin: _Origin) -> str:
    if isinstance(item, os.PathLike):
        item = os.fspath(item)
    if not isinstance(item, str) or not item.strip():
        raise _bad_value(spec, item, origin, f"got an invalid entry {_preview(item)}")
    path = Path(item).expanduser()
    if not path.is_absolute():
        # Relative roots are relative to the file's repo root (repo file), the global file's
        # directory, or for env/run the repo root (else the current directory).
        path = (origin.base_dir or Path.cwd()) / path
    # resolve() follows symlinks, so a link inside the repo that points elsewhere is judged by
    # where it really leads, never by where it sits.
    return str(path.resolve())


def _check_value(spec: KeySpec, value: object, origin: _Origin) -> Any:
    """Validate ``value`` for ``spec`` and return it normalised (float for float keys, etc.)."""
    got = f"got {_type_name(value)} {_preview(value)}"
    t = spec.type
    if t == "str":
        if not isinstance(value, str):
            raise _bad_value(spec, value, origin, got)
        if spec.choices is not None and value not in spec.choices:
            raise _bad_value(spec, value, origin, f"got {_preview(value)}, which is not allowed")
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise _bad_value(spec, value, origin, got)
        return value
    if t == "int":
        # bool is a subclass of int in Python but not an integer in TOML.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad_value(spec, value, origin, got)
        _check_number(spec, value, origin)
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad_value(spec, value, origin, got)
        _check_number(spec, value, origin)
        return float(value)
    # list[str] / list[path]
    if not isinstance(value, list | tuple):
        raise _bad_value(spec, value, origin, got)
    if t == "list[path]":
        return [_resolve_path_item(spec, item, origin) for item in value]
    for item in value:
        if not isinstance(item, str):
            raise _bad_value(
                spec, value, origin, f"got an array containing {_type_name(item)} {_preview(item)}"
            )
        if spec.choices is not None and item not in spec.choices:
            raise _bad_value(spec, value, origin, f"got {_preview(item)}, which is not allowed")
    if len(value) < spec.min_items:
        raise _bad_value(spec, value, origin, "got an empty array")
    return list(value)


def _check_passthrough(value: object, key: str, origin: _Origin) -> Any:
    """Accept any TOML value under ``codex.*``, normalised to plain JSON-able Python values."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise origin.error(
                key,
                f"{key}: got {_preview(value)}; non-finite floats cannot be passed through",
                "a finite number",
                "use a finite number",
            )
        return value
    if isinstance(value, list | tuple):
        return [_check_passthrough(v, key, origin) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _check_passthrough(v, f"{key}.{k}", origin) for k, v in value.items()}
    # Dates and times are valid TOML but not JSON; nothing codex accepts needs them.
    expected = "a string, number, boolean, array or table"
    raise origin.error(
        key,
        f"{key}: got {_type_name(value)} {_preview(value)}; expected {expected}",
        expected,
        f"quote it as a string, e.g. {origin.example(key, _toml_string(str(value)))}",
    )


def _suggest(key: str) -> str | None:
    known = list(KEY_INDEX)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if match:
        return match[0]
    # A misplaced key ("max_iterations" at top level) is best found by its last segment.
    last = key.rsplit(".", 1)[-1]
    by_last = {k.rsplit(".", 1)[-1]: k for k in known}
    match = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.75)
    return by_last[match[0]] if match else None


def _unknown_key(key: str, origin: _Origin | None) -> UnknownKeyError:
    suggestion = _suggest(key)
    message = f"unknown key {key!r}"
    if suggestion:
        message += f"; did you mean {suggestion!r}?"
    expected = "a key listed in docs/config.md (or any key under codex.*)"
    hint = (
        f"rename it to {suggestion!r}" if suggestion else "remove it"
    ) + "; `app config show` lists every key, docs/config.md describes them"
    if origin is None:
        return UnknownKeyError(message, key=key, expected=expected, hint=hint)
    return UnknownKeyError(
        message,
        path=origin.source,
        layer=origin.layer,
        key=key,
        expected=expected,
        hint=hint,
        where=origin.where(),
    )


def _is_passthrough(path: KeyPath) -> bool:
    return len(path) >= 2 and path[0] == PASSTHROUGH_TABLE and path[1] != "binary"


def _ingest(path: KeyPath, value: object, origin: _Origin, store: dict[KeyPath, Any]) -> None:
    """Validate one (possibly table) value at ``path`` and record its leaves in ``store``."""
    key = dotted(path)
    if _is_passthrough(path):
        if isinstance(value, Mapping):
            for k, v in value.items():
                _ingest((*path, str(k)), v, origin, store)
        else:
            _set_leaf(store, path, _check_passthrough(value, key, origin))
        return
    spec = KEY_INDEX.get(key)
    if spec is not None:
        if spec.repo_only and origin.layer != "repo":
            kind = "a repo cap" if spec.is_cap else "a repo-only key"
            raise origin.error(
                key,
                f"{key} is {kind} and may be set only in the repo config file "
                f"({REPO_FILE_HINT}), not in the {origin.layer} layer",
                f"{key} set in {REPO_FILE_HINT}",
                f"remove {key} from {origin.where()} and set it in {_repo_file_label(origin.repo)}",
            )
        _set_leaf(store, path, _check_value(spec, value, origin))
        return
    if key in TABLES:
        if isinstance(value, Mapping):
            for k, v in value.items():
                _ingest((*path, str(k)), v, origin, store)
            return
        sample = next(s.key for s in KEYS if s.key.startswith(key + "."))
        raise origin.error(
            key,
            f"{key} is a table, got {_type_name(value)} {_preview(value)}",
            "a table",
            f"set the keys inside it instead, e.g. "
            f"{origin.example(sample, _example_value(KEY_INDEX[sample]))}",
        )
    if isinstance(value, Mapping) and value:
        # Report the full key of the first leaf inside an unknown table ("rlmm.policy"), which
        # gives the typo suggestion something to match against.
        for k, v in value.items():
            _ingest((*path, str(k)), v, origin, store)
    raise _unknown_key(key, origin)


def _ingest_entries(entries: list[OverrideEntry], origin: _Origin) -> dict[KeyPath, Any]:
    store: dict[KeyPath, Any] = {}
    for entry in entries:
        label = f"entry {entry.number} {entry.text.strip()!r}"
        entry_origin = _Origin(origin.layer, origin.source, origin.base_dir, origin.repo, label)
        value = entry.value
        spec = KEY_INDEX.get(dotted(entry.path))
        # For a string-typed key there is no ambiguity: "-c rlm.root_model=4" means "4".
        if spec is not None and spec.type == "str" and not isinstance(value, str):
            value = entry.raw_value
        _ingest(entry.path, value, entry_origin, store)
    return store


def _ingest_mapping(overrides: Mapping[str, object], origin: _Origin) -> dict[KeyPath, Any]:
    store: dict[KeyPath, Any] = {}
    for key_text, value in overrides.items():
        try:
            path = parse_key(str(key_text))
        except ValueError:
            raise origin.error(
                str(key_text),
                f"{key_text!r} is not a valid dotted key",
                "a dotted key such as rlm.max_iterations",
                "use dotted keys made of letters, digits, '_' and '-'",
            ) from None
        _ingest(path, value, origin, store)
    return store


def _load_file(path: Path, origin: _Origin) -> dict[KeyPath, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise origin.error(
            None,
            f"cannot read the config file: {exc.strerror or exc}",
            "a readable TOML file",
            "check the path and its permissions",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise origin.error(
            None,
            f"the config file is not valid UTF-8 (byte {exc.start})",
            "a UTF-8 TOML document",
            "save the file as UTF-8",
        ) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries "(at line L, column C)".
        raise origin.error(
            None,
            f"invalid TOML: {exc}",
            "a valid TOML document",
            "fix the TOML syntax at the line and column shown",
        ) from exc
    store: dict[KeyPath, Any] = {}
    for key, value in raw.items():
        _ingest((key,), value, origin, store)
    return store


# --------------------------------------------------------------------------------------------
# The resolved config
# --------------------------------------------------------------------------------------------


def _nest(leaves: Iterable[tuple[KeyPath, Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in leaves:
        node = root
        for segment in path[:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = copy.deepcopy(value)
    return root


class ResolvedConfig:
    """The effective config: values, where each came from, and how caps shaped them."""

    def __init__(
        self,
        *,
        explanations: dict[KeyPath, Explanation],
        repo: Path | None,
        files: dict[str, str],
    ) -> None:
        self._explanations = explanations
        self._by_key = {e.key: path for path, e in explanations.items()}
        self._repo = repo
        self._files = files

    @property
    def repo(self) -> Path | None:
        """The resolved repo root, or None when no repo was given."""
        return self._repo

    @property
    def files(self) -> dict[str, str]:
        """Layer name -> config file path consulted for it (whether or not it existed)."""
        return dict(self._files)

    def keys(self) -> list[str]:
        """Every effective dotted key in schema order (``codex.*`` keys after codex.binary)."""
        return list(self._by_key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            return parse_key(key) in self._explanations
        except ValueError:
            return False

    def _lookup(self, key: str) -> KeyPath:
        try:
            path = parse_key(key)
        except ValueError:
            raise _unknown_key(key, None) from None
        if path in self._explanations:
            return path
        raise self._missing(key, path)

    def _missing(self, key: str, path: KeyPath) -> UnknownKeyError:
        n = len(path)
        inside = [e.key for p, e in self._explanations.items() if p[:n] == path and len(p) > n]
        if inside:
            return UnknownKeyError(
                f"{key} is a table, not a single key",
                key=key,
                expected="a dotted key naming one value",
                hint=f"use one of its keys: {', '.join(inside[:6])}"
                + (", ..." if len(inside) > 6 else ""),
            )
        if _is_passthrough(path):
            return UnknownKeyError(
                f"{key} is not set (codex.* is an open passthrough table)",
                key=key,
                expected="a codex.* key set in some layer",
                hint=f"set it, e.g. -c {key}=value, or pass a default to get()",
            )
        return _unknown_key(key, None)

    def _subtree(self, path: KeyPath) -> dict[str, Any] | None:
        n = len(path)
        leaves = [(p[n:], e.value) for p, e in self._explanations.items() if p[:n] == path]
        if not leaves or any(not rest for rest, _ in leaves):
            return None
        return _nest(leaves)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The effective value of a dotted key (a table prefix returns the nested table).

        Unknown keys raise :class:`UnknownKeyError` (a ``ConfigError`` and ``KeyError``).
        ``default`` is returned only for unset ``codex.*`` passthrough keys, so a typo in a
        closed key is never silently defaulted.
        """
        try:
            path = parse_key(key)
        except ValueError:
            raise _unknown_key(key, None) from None
        explanation = self._explanations.get(path)
        if explanation is not None:
            return copy.deepcopy(explanation.value)
        subtree = self._subtree(path)
        if subtree is not None:
            return subtree
        if default is not _MISSING and _is_passthrough(path):
            return default
        raise self._missing(key, path)

    def as_dict(self) -> dict[str, Any]:
        """The nested effective config (JSON-serialisable, a fresh copy)."""
        return _nest((path, e.value) for path, e in self._explanations.items())

    def provenance(self) -> dict[str, Provenance]:
        """Dotted key -> the layer and source of its effective value."""
        return {
            e.key: Provenance(e.layer, e.source, copy.deepcopy(e.value), e.narrowed_by_cap)
            for e in self._explanations.values()
        }

    def explain(self, key: str) -> Explanation:
        """Every layer that set ``key``, the cap that limited it and how, and the result."""
        return copy.deepcopy(self._explanations[self._lookup(key)])

    def codex_overrides(self) -> list[str]:
        """The ``codex.*`` passthrough keys as ``codex exec -c key=value`` arguments."""
        return [
            f"{dotted(path[1:])}={format_toml_value(e.value)}"
            for path, e in self._explanations.items()
            if _is_passthrough(path)
        ]

    def __repr__(self) -> str:
        return f"ResolvedConfig(repo={self._repo!s}, keys={len(self._explanations)})"


# --------------------------------------------------------------------------------------------
# Caps
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CapResult:
    value: Any
    cap: str | None = None
    cap_value: Any = None
    cap_source: str | None = None
    narrowed: bool = False
    removed: list[Any] | None = None
    note: str = ""


def _repo_file_label(repo: Path | None) -> str:
    return str(repo / REPO_CONFIG_RELPATH) if repo else REPO_FILE_HINT


def _within(child: Path, parent: Path) -> bool:
    return child == parent or child.is_relative_to(parent)


def intersect_roots(
    requested: Sequence[str], allowed: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Intersect resolved root lists: keep each requested root inside an allowed root, and each
    allowed root inside a requested root (the overlap). Returns ``(kept, dropped requested)``.
    """
    kept: list[str] = []
    dropped: list[str] = []
    for req in requested:
        req_path = Path(req)
        overlap = (
            [req]
            if any(_within(req_path, Path(a)) for a in allowed)
            else [a for a in allowed if _within(Path(a), req_path)]
        )
        if not overlap:
            dropped.append(req)
        kept.extend(p for p in overlap if p not in kept)
    return kept, dropped


class _Capper:
    """Applies the repo caps to the merged values; raises ConfigError for a widening attempt."""

    def __init__(
        self,
        *,
        merged: dict[KeyPath, Any],
        winners: dict[KeyPath, LayerValue],
        repo_values: dict[KeyPath, Any],
        repo_source: str,
        repo: Path | None,
        origins: dict[str, _Origin],
    ) -> None:
        self.merged = merged
        self.winners = winners
        self.repo_values = repo_values
        self.repo_source = repo_source
        self.repo = repo
        self.origins = origins

    def apply(self, spec: KeySpec) -> _CapResult:
        path = tuple(spec.key.split("."))
        value = self.merged[path]
        if spec.is_cap:
            return _CapResult(value, note=f"repo cap; may be set only in {REPO_FILE_HINT}")
        if spec.repo_only:
            return _CapResult(value, note=f"read from {REPO_FILE_HINT} only")
        if spec.cap_rule == "member":
            return self._member(spec, path, value)
        if spec.cap_rule == "subset":
            return self._subset(spec, value)
        if spec.cap_rule == "and":
            return self._and(path, value)
        if spec.cap_rule == "intersect":
            return self._intersect(path, value)
        return _CapResult(value)

    def _cap(self, cap_key: str) -> tuple[Any, str]:
        cap_path = tuple(cap_key.split("."))
        winner = self.winners[cap_path]
        label = "built-in default" if winner.layer == "default" else winner.source
        return self.merged[cap_path], label

    def _member(self, spec: KeySpec, path: KeyPath, value: Any) -> _CapResult:
        assert spec.capped_by is not None
        cap_value, cap_source = self._cap(spec.capped_by)
        checks: list[tuple[Any, str]] = []
        if path in self.repo_values:
            # The repo file must be consistent with its own cap, even if overridden above.
            checks.append((self.repo_values[path], "repo"))
        checks.append((value, self.winners[path].layer))
        for candidate, layer in checks:
            if candidate in cap_value:
                continue
            origin = self.origins[layer]
            allowed = ", ".join(format_toml_value(v) for v in cap_value)
            raise origin.error(
                spec.key,
                f"{spec.key} = {_preview(candidate)} (set by {origin.where()}) is not allowed "
                f"by the repo cap {spec.capped_by} = {_preview(cap_value)} ({cap_source}); "
                f"allowed values: {allowed}",
                f"one of {allowed}",
                f"set {spec.key} to one of {allowed}, or add {_preview(candidate)} to "
                f"{spec.capped_by} in {_repo_file_label(self.repo)}",
            )
        return _CapResult(
            value,
            cap=spec.capped_by,
            cap_value=cap_value,
            cap_source=cap_source,
            note=f"{_preview(value)} is within {spec.capped_by} = {_preview(cap_value)}",
        )

    def _subset(self, spec: KeySpec, value: list[str]) -> _CapResult:
        assert spec.capped_by is not None
        cap_value, cap_source = self._cap(spec.capped_by)
        effective: list[str] = []
        for item in value:
            if item in cap_value and item not in effective:
                effective.append(item)
        removed = [item for item in value if item not in cap_value]
        note = f"requested {_preview(value)} intersected with {spec.capped_by}"
        if removed:
            note += f"; removed {_preview(removed)} (not in {_preview(cap_value)})"
        return _CapResult(
            effective,
            cap=spec.capped_by,
            cap_value=cap_value,
            cap_source=cap_source,
            narrowed=bool(removed),
            removed=removed,
            note=note,
        )

    def _and(self, path: KeyPath, requested: bool) -> _CapResult:
        if path in self.repo_values:
            repo_value, repo_label = bool(self.repo_values[path]), self.repo_source
        else:
            repo_value, repo_label = False, "built-in default"
        winner = self.winners[path]
        effective = repo_value and requested
        return _CapResult(
            effective,
            cap="sandbox.network (repo file)",
            cap_value=repo_value,
            cap_source=repo_label,
            narrowed=requested and not effective,
            note=(
                f"repo allows {format_toml_value(repo_value)} ({repo_label}) AND requested "
                f"{format_toml_value(requested)} ({winner.layer}: {winner.source}) = "
                f"{format_toml_value(effective)}"
            ),
        )

    def _intersect(self, path: KeyPath, requested: list[str]) -> _CapResult:
        winner = self.winners[path]
        if path in self.repo_values:
            allowed, label = list(self.repo_values[path]), self.repo_source
        else:
            allowed = [str(self.repo)] if self.repo else []
            label = "built-in default (the repo root)" if self.repo else "built-in default"
        if winner.layer in ("default", "repo"):
            return _CapResult(
                requested,
                cap="paths.allowed_roots (repo file)",
                cap_value=allowed,
                cap_source=label,
                note="the repo's own list is the cap",
            )
        kept, dropped = intersect_roots(requested, allowed)
        narrowed_to = [k for k in kept if k not in requested]
        note = f"requested {_preview(requested)} intersected with the repo's {_preview(allowed)}"
        if narrowed_to:
            note += f"; narrowed to the overlap {_preview(narrowed_to)}"
        if dropped:
            note += f"; dropped {_preview(dropped)} (outside every allowed root)"
        return _CapResult(
            kept,
            cap="paths.allowed_roots (repo file)",
            cap_value=allowed,
            cap_source=label,
            narrowed=kept != requested,
            removed=dropped,
            note=note,
        )


# --------------------------------------------------------------------------------------------
# resolve_config
# --------------------------------------------------------------------------------------------


def default_global_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/codex-delegation/config.toml`` (XDG default ``~/.config``)."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        home = env.get("HOME")
        base = (Path(home) if home else Path.home()) / ".config"
    return base / GLOBAL_CONFIG_RELPATH


def resolve_config(
    *,
    repo: Path | None = None,
    global_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] | Mapping[str, object] = (),
) -> ResolvedConfig:
    """Resolve the effective config from every layer; raise :class:`ConfigError` on any problem.

    ``repo``: the repo root (its ``.codex/delegation.toml`` is the repo layer and the caps).
    ``global_path``: the global file; None means the XDG default. ``env``: the environment to
    read ``CODEX_DELEGATION_CONFIG_OVERRIDES`` (and XDG variables) from; None means
    ``os.environ``. ``overrides``: per-run ``key=value`` strings (``-c``) or a mapping of
    dotted keys to values.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    repo_root: Path | None = None
    if repo is not None:
        repo_root = Path(repo).expanduser().resolve()
        if not repo_root.is_dir():
            raise ConfigError(
                f"the repo {repo_root} is not a directory",
                path=str(repo_root),
                expected="an existing repo directory",
                hint="pass the repo root with --repo PATH",
            )
    gpath = Path(global_path) if global_path is not None else default_global_path(environ)
    gpath = gpath.expanduser().absolute()
    # env/run relative paths are relative to the repo root (None -> the cwd at use time).
    origins = {
        "default": _Origin("default", SOURCE_DEFAULT, repo_root, repo_root),
        "global": _Origin("global", str(gpath), gpath.parent, repo_root),
        "env": _Origin("env", ENV_VAR, repo_root, repo_root),
        "run": _Origin("run", SOURCE_RUN, repo_root, repo_root),
    }
    files = {"global": str(gpath)}
    repo_source = _repo_file_label(repo_root)
    if repo_root is not None:
        files["repo"] = repo_source
        origins["repo"] = _Origin("repo", repo_source, repo_root, repo_root)

    defaults: dict[KeyPath, Any] = {tuple(s.key.split(".")): copy.deepcopy(s.default) for s in KEYS}
    defaults[("paths", "allowed_roots")] = [str(repo_root)] if repo_root else []

    layers: list[tuple[str, dict[KeyPath, Any]]] = [
        ("default", defaults),
        ("global", _load_file(gpath, origins["global"])),
    ]
    repo_values: dict[KeyPath, Any] = {}
    if repo_root is not None:
        repo_values = _load_file(repo_root / REPO_CONFIG_RELPATH, origins["repo"])
        layers.append(("repo", repo_values))
    env_text = environ.get(ENV_VAR, "")
    layers.append(("env", _ingest_entries(parse_override_entries(env_text), origins["env"])))
    if isinstance(overrides, Mapping):
        run_values = _ingest_mapping(overrides, origins["run"])
    else:
        # A lone string is one -c entry, not a sequence of one-character entries.
        run_entries = [overrides] if isinstance(overrides, str) else list(overrides)
        run_values = _ingest_entries(parse_run_entries(run_entries), origins["run"])
    layers.append(("run", run_values))

    merged: dict[KeyPath, Any] = {}
    history: dict[KeyPath, list[LayerValue]] = {}
    for layer, values in layers:
        source = origins[layer].source
        for path, value in values.items():
            for dropped in _set_leaf(merged, path, value):
                history.pop(dropped, None)
            history.setdefault(path, []).append(LayerValue(layer, source, copy.deepcopy(value)))
    winners = {path: entries[-1] for path, entries in history.items()}

    capper = _Capper(
        merged=merged,
        winners=winners,
        repo_values=repo_values,
        repo_source=repo_source,
        repo=repo_root,
        origins=origins,
    )
    explanations: dict[KeyPath, Explanation] = {}
    for spec in KEYS:
        path = tuple(spec.key.split("."))
        result = capper.apply(spec)
        explanations[path] = _explanation(spec.key, result, winners[path], history[path])
        if spec.key == "codex.binary":
            # Keep the open codex.* keys next to codex.binary so the codex table stays whole.
            for extra in sorted(p for p in merged if _is_passthrough(p)):
                result = _CapResult(merged[extra], note="codex.* passthrough (codex exec -c)")
                explanations[extra] = _explanation(
                    dotted(extra), result, winners[extra], history[extra]
                )
    return ResolvedConfig(explanations=explanations, repo=repo_root, files=files)


def _explanation(
    key: str, result: _CapResult, winner: LayerValue, history: list[LayerValue]
) -> Explanation:
    return Explanation(
        key=key,
        value=result.value,
        layer=winner.layer,
        source=winner.source,
        layers=list(history),
        cap=result.cap,
        cap_value=result.cap_value,
        cap_source=result.cap_source,
        narrowed_by_cap=result.narrowed,
        removed=list(result.removed or []),
        note=result.note,
    )
