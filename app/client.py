"""A synchronous client of the runner for the CLI (and the demo): find it, authenticate.

The runner is found through ``<home>/control_endpoint.json`` and its token file; both must
be the user's own and private. Requests identify as the CLI (``X-Codex-Client: cli``), a
person's client, so confirm-to-act approvals are allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from app.home import Home


class RunnerNotFound(RuntimeError):
    """No runner answers for the home; the message says how to start one."""


class ApiError(RuntimeError):
    """The runner answered with an error: its ``{error, detail}``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"{detail} ({code}, HTTP {status})")


def connect(home: Home, *, timeout_s: float = 30.0) -> httpx.Client:
    """An open HTTP client of the home's live runner (close it; it is not a context
    manager any more once it has been used); raises RunnerNotFound."""
    hint = f"start one with `app serve --home {home.root}` (or `make run`)"
    try:
        endpoint = json.loads(home.endpoint_path.read_text())
        token = json.loads(Path(endpoint["token_path"]).read_text())["token"]
    except (OSError, ValueError, KeyError):
        raise RunnerNotFound(f"no runner is up for {home.root}; {hint}") from None
    client = httpx.Client(
        base_url=endpoint["base_url"],
        headers={"Authorization": f"Bearer {token}", "X-Codex-Client": "cli"},
        timeout=timeout_s,
        trust_env=False,  # loopback only: never through a proxy from the environment
    )
    try:
        client.get("/api/health").raise_for_status()
    except httpx.HTTPError:
        client.close()
        raise RunnerNotFound(
            f"the runner at {endpoint['base_url']} does not answer; {hint}"
        ) from None
    return client


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """Send a request; return the JSON body, or raise ApiError with the runner's words."""
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            body = response.json()
            raise ApiError(response.status_code, body["error"], body["detail"])
        except (ValueError, KeyError):
            raise ApiError(response.status_code, "error", response.text[:500]) from None
    return response.json() if response.content else None
