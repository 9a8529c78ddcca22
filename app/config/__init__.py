"""The one config resolver (DESIGN §6).

``resolve_config()`` merges built-in defaults < global file < repo file < environment
(``CODEX_DELEGATION_CONFIG_OVERRIDES``) < per-run overrides, validates every key against the key
table in :mod:`app.config.schema`, applies the repo caps, and returns a :class:`ResolvedConfig`
that can say where each value came from.
"""

from app.config.resolver import (
    ConfigError,
    Explanation,
    LayerValue,
    OverrideEntry,
    Provenance,
    ResolvedConfig,
    UnknownKeyError,
    default_global_path,
    format_toml_value,
    parse_override_entries,
    resolve_config,
)
from app.config.schema import ENV_VAR, KEY_INDEX, KEYS, LAYERS, KeySpec

__all__ = [
    "ENV_VAR",
    "KEYS",
    "KEY_INDEX",
    "LAYERS",
    "ConfigError",
    "Explanation",
    "KeySpec",
    "LayerValue",
    "OverrideEntry",
    "Provenance",
    "ResolvedConfig",
    "UnknownKeyError",
    "default_global_path",
    "format_toml_value",
    "parse_override_entries",
    "resolve_config",
]
