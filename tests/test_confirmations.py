"""Confirm-to-act: signed, single-use, deduplicated, expiring confirmations that replay actions."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import freezegun
import msgspec
import pytest

from app.control.actions import ControlAction, request_control
from app.control.confirmations import (
    ActionSpec,
    ApprovedAction,
    ConfirmationConflict,
    ConfirmationExpired,
    ConfirmationNotFound,
    ConfirmationRefused,
    ConfirmationService,
    ConfirmationView,
    InvalidConfirmation,
    TooManyPending,
    canonical_json,
    load_or_create_key,
    params_digest,
    required_view,
)
from app.control.errors import Conflict, Forbidden, LimitReached
from app.wire.events import Actor, EventEnvelope
from db.eventlog import UnknownRun
from db.runs import create_run, get_run
from db.store import Store

T0 = "2030-01-01T00:00:00Z"
KEY = bytes(range(32))


def service(store: Store, **overrides: Any) -> ConfirmationService:
    options: dict[str, Any] = {"key": KEY, "ttl_s": 900, "max_pending": 3}
    options.update(overrides)
    return ConfirmationService(store.log, **options)


def new_run(store: Store) -> str:
    return create_run(store.log, task="t", engine="rlm", actor=Actor.PARENT).id


def events(store: Store, run_id: str) -> list[EventEnvelope]:
    return store.log.page(run_id, limit=1_000)


def types(store: Store, run_id: str) -> list[str]:
    return [event.type for event in events(store, run_id)]


def sql(store: Store, statement: str, *params: Any) -> None:
    with store.db.atomic():
        store.db.execute_sql(statement, params)


def expected_nonce(view: ConfirmationView, digest: str) -> bytes:
    message = canonical_json([view.id, view.run_id, view.action, digest, view.expires_at])
    return hmac.new(KEY, message.encode(), hashlib.sha256).digest()


# -- creating ----------------------------------------------------------------------------------


def test_require_creates_a_signed_confirmation_and_an_event(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    with freezegun.freeze_time(T0):
        view = confirmations.require(
            run, action="cancel", params={"reason": "wrong repo"}, requested_by=Actor.MCP
        )
    assert view.id.startswith("cf_")
    assert view.run_id == run and view.action == "cancel"
    assert view.params == {"reason": "wrong repo"}
    assert view.status == "pending" and view.resolved_at is None
    assert view.created_at == "2030-01-01T00:00:00.000Z"
    assert view.expires_at == "2030-01-01T00:15:00.000Z"
    digest = params_digest("cancel", {"reason": "wrong repo"})
    assert (
        digest
        == hashlib.sha256(b'{"action":"cancel","params":{"reason":"wrong repo"}}').hexdigest()
    )
    last = events(store, run)[-1]
    assert last.type == "confirmation_required" and last.actor == Actor.MCP
    assert last.payload == {
        "confirmation_id": view.id,
        "action": "cancel",
        "expires_at": view.expires_at,
        "params_digest": digest,
    }
    # Only the nonce's hash is stored, and it is the HMAC of the confirmation's fields.
    stored = store.db.execute_sql(
        "SELECT digest, nonce_hash, params FROM confirmation WHERE id = ?", (view.id,)
    ).fetchone()
    nonce = expected_nonce(view, digest)
    assert stored[0] == digest
    assert stored[1] == hashlib.sha256(nonce).hexdigest()
    assert stored[2] == '{"reason":"wrong repo"}'
    assert confirmations.get(view.id) == view
    assert confirmations.list() == [view]


def test_require_deduplicates_by_digest(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    first = confirmations.require(
        run, action="cancel", params={"reason": "r"}, requested_by=Actor.MCP
    )
    again = confirmations.require(
        run, action="cancel", params={"reason": "r"}, requested_by=Actor.MCP
    )
    assert again == first
    assert types(store, run).count("confirmation_required") == 1
    other = confirmations.require(
        run, action="cancel", params={"reason": "other"}, requested_by=Actor.MCP
    )
    assert other.id != first.id
    # No reason and reason None are the same params.
    bare = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    assert (
        confirmations.require(run, action="cancel", params={"reason": None}, requested_by=Actor.MCP)
        == bare
    )
    # Another run's identical request is its own confirmation.
    elsewhere = confirmations.require(
        new_run(store), action="cancel", params={"reason": "r"}, requested_by=Actor.MCP
    )
    assert elsewhere.id != first.id


def test_a_resolved_confirmation_is_not_reused(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    first = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    confirmations.deny(first.id, by=Actor.UI)
    second = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    assert second.id != first.id and second.status == "pending"


def test_max_pending_per_run(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store, max_pending=2)
    with freezegun.freeze_time(T0) as frozen:
        confirmations.require(run, action="cancel", params={"reason": "1"}, requested_by=Actor.MCP)
        confirmations.require(run, action="cancel", params={"reason": "2"}, requested_by=Actor.MCP)
        with pytest.raises(TooManyPending, match="max_pending = 2") as caught:
            confirmations.require(
                run, action="cancel", params={"reason": "3"}, requested_by=Actor.MCP
            )
        assert isinstance(caught.value, LimitReached)
        # A duplicate of a pending one is still answered (it creates nothing).
        assert confirmations.require(
            run, action="cancel", params={"reason": "1"}, requested_by=Actor.MCP
        ).params == {"reason": "1"}
        # Other runs have their own allowance.
        confirmations.require(
            new_run(store), action="cancel", params={"reason": "3"}, requested_by=Actor.MCP
        )
        # Expired ones stop counting, even before they are swept.
        frozen.tick(901)
        confirmations.require(run, action="cancel", params={"reason": "3"}, requested_by=Actor.MCP)
    assert types(store, run).count("confirmation_required") == 3


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("merge", {}, "unknown action 'merge'; actions that take a confirmation: cancel"),
        ("cancel", ["not", "an", "object"], "must be a JSON object"),
        ("cancel", "reason", "must be a JSON object"),
        ("cancel", {"force": True}, "cancel takes only an optional 'reason'; remove 'force'"),
        ("cancel", {"reason": 7}, "'reason' must be a string"),
        ("cancel", {"reason": "x" * 3000}, "at most 2000 characters"),
    ],
)
def test_require_validation(store: Store, action: str, params: Any, message: str) -> None:
    run = new_run(store)
    with pytest.raises(InvalidConfirmation, match=message) as caught:
        service(store).require(run, action=action, params=params, requested_by=Actor.MCP)
    assert isinstance(caught.value, ValueError)
    assert types(store, run) == ["run_queued"]


def test_require_on_ended_or_unknown_runs(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    request_control(
        store.log, run, action=ControlAction.CANCEL, request_id="c", requested_by=Actor.CLI
    )
    with pytest.raises(ConfirmationConflict, match="has ended \\(cancelled\\)"):
        confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    with pytest.raises(UnknownRun):
        confirmations.require("run_nope", action="cancel", params={}, requested_by=Actor.MCP)
    with pytest.raises(ConfirmationNotFound):
        confirmations.get("cf_nope")
    with pytest.raises(ConfirmationNotFound):
        confirmations.approve("cf_nope", by=Actor.UI)


def test_list_filters(store: Store) -> None:
    run, other = new_run(store), new_run(store)
    confirmations = service(store)
    a = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    b = confirmations.require(other, action="cancel", params={}, requested_by=Actor.MCP)
    confirmations.deny(b.id, by=Actor.UI)
    assert {v.id for v in confirmations.list()} == {a.id, b.id}
    assert [v.id for v in confirmations.list(status="pending")] == [a.id]
    assert [v.id for v in confirmations.list(status="denied")] == [b.id]
    assert [v.id for v in confirmations.list(run_id=other)] == [b.id]
    assert confirmations.list(run_id=run, status="denied") == []
    with pytest.raises(InvalidConfirmation, match="status"):
        confirmations.list(status="waiting")


def test_params_are_redacted_in_views(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(
        run,
        action="cancel",
        params={"reason": "key sk-abcdefghijklmnopqrstuvwxyz leaked"},
        requested_by=Actor.MCP,
    )
    assert "sk-abcdefghijklmnop" not in view.params["reason"]


# -- approving, denying ------------------------------------------------------------------------


def test_approve_executes_the_cancel(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(
        run, action="cancel", params={"reason": "not needed"}, requested_by=Actor.MCP
    )
    approved = confirmations.approve(view.id, by=Actor.UI)
    assert approved.status == "approved" and approved.resolved_by == "ui"
    summary = get_run(store.log, run)
    assert summary.state == "cancelled"
    tail = events(store, run)[-3:]
    assert [e.type for e in tail] == ["confirmation_resolved", "cancel_requested", "run_cancelled"]
    assert tail[0].payload == {
        "confirmation_id": view.id,
        "action": "cancel",
        "resolution": "approved",
        "resolved_by": "ui",
    }
    assert tail[1].payload["request_id"] == f"confirm:{view.id}"
    assert tail[1].payload["requested_by"] == "ui"
    assert tail[1].payload["reason"] == "not needed"
    assert all(e.actor == Actor.UI for e in tail)


def test_approval_is_single_use(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    confirmations.approve(view.id, by=Actor.CLI)
    before = types(store, run)
    with pytest.raises(ConfirmationConflict, match="is approved, not pending") as caught:
        confirmations.approve(view.id, by=Actor.CLI)
    assert isinstance(caught.value, Conflict) and caught.value.status == "approved"
    with pytest.raises(ConfirmationConflict, match="is approved"):
        confirmations.deny(view.id, by=Actor.CLI)
    assert types(store, run) == before


def test_concurrent_approvals_execute_once(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def approve() -> None:
        try:
            barrier.wait()
            confirmations.approve(view.id, by=Actor.UI)
            outcomes.append("approved")
        except ConfirmationConflict:
            outcomes.append("conflict")
        finally:
            store.db.close()

    threads = [threading.Thread(target=approve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["approved"] + ["conflict"] * 7
    assert types(store, run).count("run_cancelled") == 1


def test_deny(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    denied = confirmations.deny(view.id, by=Actor.TUI)
    assert denied.status == "denied" and denied.resolved_by == "tui"
    assert get_run(store.log, run).state == "queued"
    last = events(store, run)[-1]
    assert last.type == "confirmation_resolved"
    assert last.payload["resolution"] == "denied" and last.payload["resolved_by"] == "tui"
    with pytest.raises(ConfirmationConflict, match="is denied"):
        confirmations.approve(view.id, by=Actor.UI)


@pytest.mark.parametrize("actor", [Actor.MCP, Actor.DELEGATE, Actor.PARENT, Actor.RUNNER])
def test_only_a_person_may_approve(store: Store, actor: Actor) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    with pytest.raises(ConfirmationRefused, match="only be approved by a person") as caught:
        confirmations.approve(view.id, by=actor)
    assert isinstance(caught.value, Forbidden)
    last = events(store, run)[-1]
    assert last.type == "security_violation"
    assert last.payload["kind"] == "confirmation_approver_not_a_person"
    assert confirmations.get(view.id).status == "pending"
    assert get_run(store.log, run).state == "queued"


def test_approving_a_cancel_on_an_ended_run_leaves_it_pending(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    from app.wire.events import RunFailed
    from db.runs import transition

    transition(store.log, run, RunFailed(reason="boom"), actor=Actor.RUNNER)
    with pytest.raises(ConfirmationConflict, match=r"could not be carried out.*has ended"):
        confirmations.approve(view.id, by=Actor.UI)
    assert confirmations.get(view.id).status == "pending"
    assert "confirmation_resolved" not in types(store, run)


def test_custom_actions_register_in_the_registry(store: Store) -> None:
    seen: list[ApprovedAction] = []
    spec = ActionSpec(name="noop", check=dict, execute=seen.append)
    confirmations = service(store, actions={"noop": spec})
    run = new_run(store)
    view = confirmations.require(run, action="noop", params={"n": 1}, requested_by=Actor.MCP)
    confirmations.approve(view.id, by=Actor.USER)
    assert [(a.run_id, a.confirmation_id, a.params, a.approver) for a in seen] == [
        (run, view.id, {"n": 1}, Actor.USER)
    ]
    with pytest.raises(InvalidConfirmation, match="unknown action 'cancel'"):
        confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)


# -- expiry ------------------------------------------------------------------------------------


def test_expire_due(store: Store) -> None:
    run = new_run(store)
    confirmations = service(store, ttl_s=60)
    with freezegun.freeze_time(T0) as frozen:
        view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
        frozen.tick(59)
        assert confirmations.expire_due() == []
        frozen.tick(1)
        expired = confirmations.expire_due()
    assert [v.id for v in expired] == [view.id]
    assert expired[0].status == "expired" and expired[0].resolved_by == "runner"
    last = events(store, run)[-1]
    assert last.type == "confirmation_resolved" and last.actor == Actor.RUNNER
    assert last.payload["resolution"] == "expired"
    assert confirmations.expire_due() == []
    assert get_run(store.log, run).state == "queued"


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_resolving_after_expiry_marks_it_expired(store: Store, verb: str) -> None:
    run = new_run(store)
    confirmations = service(store, ttl_s=60)
    with freezegun.freeze_time(T0) as frozen:
        view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
        frozen.tick(61)
        with pytest.raises(ConfirmationExpired, match=r"expired at .* ask for the action again"):
            getattr(confirmations, verb)(view.id, by=Actor.UI)
    assert confirmations.get(view.id).status == "expired"
    assert get_run(store.log, run).state == "queued"
    last = events(store, run)[-1]
    assert last.type == "confirmation_resolved" and last.payload["resolution"] == "expired"
    with pytest.raises(ConfirmationConflict, match="is expired"):
        confirmations.approve(view.id, by=Actor.UI)


# -- tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "merge"),
        ("params", '{"reason":"something else"}'),
        ("params", "not json"),
        ("expires_at", "2099-01-01T00:00:00.000Z"),
        ("digest", "0" * 64),
        ("nonce_hash", "f" * 64),
    ],
)
def test_a_tampered_row_is_refused(store: Store, column: str, value: str) -> None:
    run = new_run(store)
    confirmations = service(store)
    view = confirmations.require(
        run, action="cancel", params={"reason": "r"}, requested_by=Actor.MCP
    )
    sql(store, f"UPDATE confirmation SET {column} = ? WHERE id = ?", value, view.id)
    with pytest.raises(ConfirmationRefused, match="changed outside the runner") as caught:
        confirmations.approve(view.id, by=Actor.UI)
    assert isinstance(caught.value, Forbidden)
    assert get_run(store.log, run).state == "queued"
    tail = events(store, run)[-2:]
    assert [e.type for e in tail] == ["security_violation", "confirmation_resolved"]
    assert tail[0].payload["kind"] == "confirmation_tampered"
    assert tail[1].payload["resolution"] == "denied" and tail[1].payload["resolved_by"] == "runner"
    assert confirmations.get(view.id).status == "denied"


def test_another_key_cannot_approve(store: Store) -> None:
    run = new_run(store)
    view = service(store).require(run, action="cancel", params={}, requested_by=Actor.MCP)
    with pytest.raises(ConfirmationRefused):
        service(store, key=b"\x01" * 32).approve(view.id, by=Actor.UI)
    assert get_run(store.log, run).state == "queued"


def test_no_nonce_or_key_leaves_the_runner(store: Store, tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "confirm.key")
    confirmations = service(store, key=key)
    run = new_run(store)
    view = confirmations.require(run, action="cancel", params={}, requested_by=Actor.MCP)
    other = confirmations.require(
        run, action="cancel", params={"reason": "x"}, requested_by=Actor.MCP
    )
    confirmations.approve(view.id, by=Actor.UI)
    with pytest.raises(ConfirmationConflict) as caught:
        confirmations.approve(other.id, by=Actor.UI)  # the run is cancelled now
    digest = params_digest("cancel", {})
    message = canonical_json([view.id, view.run_id, view.action, digest, view.expires_at])
    nonce = hmac.new(key, message.encode(), hashlib.sha256).digest()
    secrets_as_text = {nonce.hex(), key.hex(), nonce.hex().upper(), key.hex().upper()}
    haystacks = [
        store.home.events_mirror(run).read_text(),
        json.dumps([msgspec.to_builtins(e) for e in events(store, run)]),
        msgspec.json.encode(confirmations.list()).decode(),
        msgspec.json.encode(required_view(view, approve_hint="app confirm")).decode(),
        str(caught.value),
        repr(confirmations),
    ]
    for haystack in haystacks:
        for secret in secrets_as_text:
            assert secret not in haystack
        assert "nonce" not in haystack.lower()


def test_required_view(store: Store) -> None:
    view = service(store).require(
        new_run(store), action="cancel", params={}, requested_by=Actor.MCP
    )
    shown = required_view(view, approve_hint=f"app confirmations approve {view.id}")
    assert msgspec.to_builtins(shown) == {
        "confirmation_id": view.id,
        "action": "cancel",
        "expires_at": view.expires_at,
        "how_to_approve": f"app confirmations approve {view.id}",
    }


# -- the key -----------------------------------------------------------------------------------


def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "confirm.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["confirm.key"]  # no temp file left


def test_concurrent_key_creation_agrees(tmp_path: Path) -> None:
    path = tmp_path / "confirm.key"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        keys.append(load_or_create_key(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_unsafe_key_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "confirm.key"
    path.write_bytes(b"\x00" * 32)
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_or_create_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32-byte key"):
        load_or_create_key(path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(ValueError, match="symlink"):
        load_or_create_key(link)


def test_short_keys_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        service(store, key=b"short")
