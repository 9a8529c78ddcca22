"""``app config show`` and ``app config explain``: print the effective config and its origins.

Both commands return a process exit code (0 on success, 2 on a config error, which is printed
to ``err``) so the CLI can ``return`` them directly.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from app.config.resolver import (
    ConfigError,
    Explanation,
    ResolvedConfig,
    dotted,
    format_toml_value,
    parse_key,
    resolve_config,
)
from app.config.schema import LAYERS

SHOW_FORMATS = ("toml", "json")
EXPLAIN_FORMATS = ("text", "json")


def _layer_label(layer: str, source: str) -> str:
    return layer if layer == "default" else f"{layer}: {source}"


def render_toml(config: ResolvedConfig) -> str:
    """Render the effective config as a TOML document, each key commented with its layer."""
    provenance = config.provenance()
    tables: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for key in config:
        path = parse_key(key)
        prov = provenance[key]
        comment = _layer_label(prov.layer, prov.source)
        if prov.narrowed_by_cap:
            comment += f" (narrowed by the repo cap {config.explain(key).cap})"
        line = f"{dotted(path[-1:])} = {format_toml_value(prov.value)}  # {comment}"
        # Every key sits in a table (closed keys all have one; codex.* keys are under codex),
        # so grouping by table path emits each [header] exactly once.
        tables.setdefault(path[:-1], []).append((key, line))
    lines = [
        "# Effective Codex Delegation config.",
        f"# Layers, lowest first: {' < '.join(LAYERS)}. Each comment names the layer a key",
        "# came from (and its file).",
        f"# repo: {config.repo if config.repo is not None else '(none)'}",
    ]
    lines.extend(f"# {layer} file: {path}" for layer, path in config.files.items())
    for table, entries in tables.items():
        lines.extend(["", f"[{dotted(table)}]"])
        lines.extend(line for _, line in entries)
    return "\n".join(lines) + "\n"


def render_json(config: ResolvedConfig) -> str:
    """``{"config": {...}, "provenance": {...}}`` as indented JSON."""
    payload = {"config": config.as_dict(), "provenance": config.provenance()}
    return msgspec.json.format(msgspec.json.encode(payload), indent=2).decode() + "\n"


def render_explanation(explanation: Explanation) -> str:
    """Human-readable explanation of one key."""
    e = explanation
    lines = [
        f"key:       {e.key}",
        f"value:     {format_toml_value(e.value)}",
        f"from:      {_layer_label(e.layer, e.source)}",
        "set by (lowest layer first):",
    ]
    width = max(len(lv.source) for lv in e.layers)
    lines.extend(
        f"  {lv.layer:<8} {lv.source:<{width}}  {format_toml_value(lv.value)}" for lv in e.layers
    )
    if e.cap is not None:
        lines.append(f"cap:       {e.cap} = {format_toml_value(e.cap_value)} ({e.cap_source})")
        narrowed = "yes" if e.narrowed_by_cap else "no"
        if e.removed:
            narrowed += f"; removed {format_toml_value(e.removed)}"
        lines.append(f"narrowed:  {narrowed}")
    if e.note:
        lines.append(f"note:      {e.note}")
    return "\n".join(lines) + "\n"


def _fail(err: TextIO | None, message: str) -> int:
    print(message, file=err or sys.stderr)
    return 2


def show(
    *,
    repo: Path | None,
    overrides: Sequence[str],
    fmt: str = "toml",
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    global_path: Path | None = None,
) -> int:
    """Print the effective config (``fmt`` ``toml`` or ``json``); return 0, or 2 on error.

    ``out``/``err`` default to ``sys.stdout``/``sys.stderr`` at call time; ``env`` and
    ``global_path`` are passed to :func:`resolve_config` (None = the real environment / XDG).
    """
    if fmt not in SHOW_FORMATS:
        return _fail(err, f"unknown format {fmt!r}; expected one of {', '.join(SHOW_FORMATS)}")
    try:
        config = resolve_config(repo=repo, global_path=global_path, env=env, overrides=overrides)
    except ConfigError as exc:
        return _fail(err, f"config error: {exc}")
    text = render_toml(config) if fmt == "toml" else render_json(config)
    (out or sys.stdout).write(text)
    return 0


def explain(
    key: str,
    *,
    repo: Path | None,
    overrides: Sequence[str],
    fmt: str = "text",
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    global_path: Path | None = None,
) -> int:
    """Print the effective value of ``key``, every layer that set it, and its cap; 0 or 2."""
    if fmt not in EXPLAIN_FORMATS:
        return _fail(err, f"unknown format {fmt!r}; expected one of {', '.join(EXPLAIN_FORMATS)}")
    try:
        config = resolve_config(repo=repo, global_path=global_path, env=env, overrides=overrides)
        explanation = config.explain(key)
    except ConfigError as exc:
        return _fail(err, f"config error: {exc}")
    if fmt == "json":
        text = msgspec.json.format(msgspec.json.encode(explanation), indent=2).decode() + "\n"
    else:
        text = render_explanation(explanation)
    (out or sys.stdout).write(text)
    return 0
