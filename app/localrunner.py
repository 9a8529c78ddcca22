"""Start a real `app serve` subprocess on a home and talk to it (tests, benchmarks, demos)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.home import Home

ROOT = Path(__file__).resolve().parent.parent
APP = str(Path(sys.executable).with_name("app"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: ours plus the project on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass
class LiveRunner:
    """An ``app serve`` subprocess on a private home, and ways to talk to it."""

    home: Home
    base_url: str
    token: str
    proc: subprocess.Popen[str]

    @property
    def host(self) -> str:
        """The ``Host`` value the runner accepts (``127.0.0.1:<port>``)."""
        return self.base_url.removeprefix("http://")

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        """An HTTP client authenticated with the control token (or ``token``)."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token or self.token}", **headers},
            timeout=30,
        )

    def browser(self) -> httpx.Client:
        """A client signed in like a browser: session cookie and CSRF header set.

        It is already open (not usable with ``with``): call ``close()`` when done.
        """
        with self.client() as api:
            url = api.post("/api/ui/login-codes", json={}).json()["url"]
        client = httpx.Client(base_url=self.base_url, timeout=30, follow_redirects=False)
        response = client.get(url.removeprefix(self.base_url))
        assert response.status_code == 303, response.text
        csrf = client.get("/api/session").json()["csrf_token"]
        client.headers["X-CSRF-Token"] = csrf
        return client

    def delegation_token(self, run_id: str) -> str:
        """The delegation token the runner issued for ``run_id``."""
        return (self.home.run_dir(run_id) / "delegation_token").read_text()

    def stop(self) -> int:
        """SIGINT the runner and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_runner(home: Home, **env: str) -> LiveRunner:
    """Start ``app serve`` on ``home`` and wait until its endpoint file is written."""
    home.ensure()
    overrides = env.pop("CODEX_DELEGATION_CONFIG_OVERRIDES", "")
    proc = subprocess.Popen(
        [APP, "serve", "--home", str(home.root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=subprocess_env(CODEX_DELEGATION_CONFIG_OVERRIDES=overrides, **env),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Ctrl-C" in line:
            break
    else:
        raise RuntimeError(f"runner exited early with {proc.wait()}")
    endpoint = json.loads(home.endpoint_path.read_text())
    token = json.loads(Path(endpoint["token_path"]).read_text())["token"]
    return LiveRunner(home=home, base_url=endpoint["base_url"], token=token, proc=proc)
