"""Packaging facts other parts rely on."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_webview_import_is_pywebview_not_our_asset_folder() -> None:
    # Run from the repo root, where our `webview/` folder sits first on sys.path.
    result = subprocess.run(
        [sys.executable, "-c", "import webview; print(webview.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages" in result.stdout
    assert not (ROOT / "webview" / "__init__.py").exists()
