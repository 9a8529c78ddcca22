"""The one redactor: every event payload and log line passes through here before it is written.

Two rules. A mapping key that looks like a secret (``token``, ``api_key``, ``confirm_nonce``,
``Authorization`` ... in any case and with ``-``/``_``/``.``/space separators) has its value
replaced. A string that looks like a credential (``Bearer …``, ``sk-…``, GitHub tokens, our
own ``cdp_…`` tokens) is masked wherever it appears.
"""

from __future__ import annotations

import functools
import re
from typing import Any

REDACTED = "[REDACTED]"

#: Normalised (lower-case, separators removed) key fragments that mark a secret.
_SECRET_KEY_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "nonce",
    "apikey",
    "authorization",
    "cookie",
    "credential",
    "privatekey",
    "sessionid",
)
_SEPARATORS = re.compile(r"[\s_\-.]+")
_SECRET_VALUE = re.compile(
    r"(?i:bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bcdp[a-z]?_[A-Za-z0-9_-]{16,}"
)


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Return True when a mapping key names a secret (case and separator insensitive)."""
    folded = _SEPARATORS.sub("", key).lower()
    if folded.endswith("tokens"):
        # Token *counts* (input_tokens, budget_tokens, max_tokens) are usage figures, not secrets.
        return False
    return any(part in folded for part in _SECRET_KEY_PARTS)


def redact_text(text: str) -> str:
    """Mask credential-shaped substrings of ``text``."""
    if len(text) < 8:
        return text
    return _SECRET_VALUE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """Return a copy of a JSON-like value with secrets removed (input is not modified)."""
    if isinstance(value, dict):
        return {
            key: (REDACTED if isinstance(key, str) and is_secret_key(key) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def find_secret_keys(value: Any, path: str = "$") -> list[str]:
    """List the JSON paths of every secret-looking key in ``value`` (used to refuse arguments)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if isinstance(key, str) and is_secret_key(key):
                found.append(here)
            found.extend(find_secret_keys(item, here))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(find_secret_keys(item, f"{path}[{index}]"))
    return found
