"""Shared by the docs generators: write a generated file, or check that it is up to date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generated_doc_main(
    default_target: Path, render: Callable[[], str], argv: list[str] | None = None
) -> int:
    """CLI of a generator: write the target from ``render()``, or with ``--check`` compare.

    ``--check`` exits 1 with a message naming the fix when the file is missing or stale.
    """
    script = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(description=f"Generate {default_target.name}.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=default_target, help="file to write/check")
    args = parser.parse_args(argv)
    text = render()
    target: Path = args.output
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            state = "missing" if current is None else "stale"
            print(
                f"{target} is {state}; run `python scripts/{script}` to regenerate it",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0
