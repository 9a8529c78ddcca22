"""Writing the runner's own files: atomically, and private (0600) from the first byte."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_private(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically; the file is mode 0600 throughout."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    tmp.replace(path)


def write_private_json(path: Path, document: Any) -> None:
    """:func:`write_private` of an indented JSON document with a trailing newline."""
    write_private(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
