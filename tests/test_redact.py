"""The one redactor."""

from __future__ import annotations

import pytest

from app.redact import REDACTED, find_secret_keys, is_secret_key, redact, redact_text


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "Delegation-Token",
        "confirm_nonce",
        "CONFIRM.NONCE",
        "api key",
        "Authorization",
        "client_secret",
        "password",
        "session_id",
        "GITHUB_TOKEN",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["input_tokens", "max_tokens", "tool", "params", "run_id", "seq"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_redact_is_deep_and_does_not_modify_its_input() -> None:
    value = {"a": [{"token": "x"}, "Bearer abcdefghijkl"], "b": {"ok": 1}}
    assert redact(value) == {"a": [{"token": REDACTED}, REDACTED], "b": {"ok": 1}}
    assert value["a"][0] == {"token": "x"}


def test_credential_shaped_strings() -> None:
    assert redact_text("use ghp_" + "a" * 36 + " now") == f"use {REDACTED} now"
    assert redact_text("plain words stay") == "plain words stay"


def test_find_secret_keys_reports_paths() -> None:
    found = find_secret_keys({"x": [{"confirmNonce": 1}], "delegation_token": 2})
    assert found == ["$.x[0].confirmNonce", "$.delegation_token"]
