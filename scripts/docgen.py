"""Shared by the docs generators: write a generated file, or check that it is up to date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generated_doc_main(target: Path, render: Callable[[], str], argv: list[str] | None = None) -> int:
    """CLI of a generator: write ``target`` from ``render()``, or with ``--check`` compare."""
    parser = argparse.ArgumentParser(description=f"Generate {target.relative_to(ROOT)}.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(
                f"{target.relative_to(ROOT)} is out of date: run "
                f"`.venv/bin/python {Path(sys.argv[0]).relative_to(ROOT)}` and commit it",
                file=sys.stderr,
            )
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")
    return 0
