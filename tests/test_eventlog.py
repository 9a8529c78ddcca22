"""The event log: seq assignment, envelope, redaction, transactions, reading, the mirror."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from app.wire.events import (
    Actor,
    AgentMessage,
    EventEnvelope,
    RunStarted,
    StepStarted,
    ToolCalled,
)
from db.eventlog import UnknownRun
from db.mirror import read_mirror
from db.runs import create_run, transition
from db.store import Store

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def mirror_lines(store: Store, run_id: str) -> list[dict[str, object]]:
    text = store.home.events_mirror(run_id).read_text()
    return [json.loads(line) for line in text.splitlines()]


def db_lines(store: Store, run_id: str) -> list[dict[str, object]]:
    return [msgspec.to_builtins(e) for e in store.log.page(run_id, limit=1_000_000)]


def test_seq_starts_at_one_and_is_contiguous(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    for step in range(5):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    events = store.log.page(run.id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].type == "run_queued"
    assert store.log.last_seq(run.id) == 6


def test_envelope_v1_shape(store: Store) -> None:
    parent = create_run(store.log, task="parent", engine="codex", actor=Actor.CLI)
    child = create_run(
        store.log,
        task="child",
        engine="rlm",
        actor=Actor.PARENT,
        parent_run_id=parent.id,
        task_id="task-7",
    )
    event = store.log.append(child.id, AgentMessage(text="hello"), actor=Actor.DELEGATE)
    line = mirror_lines(store, child.id)[-1]
    assert list(line) == [
        "schema_version",
        "seq",
        "ts",
        "run_id",
        "task_id",
        "parent_run_id",
        "type",
        "actor",
        "payload",
    ]
    assert line["schema_version"] == 1
    assert line["run_id"] == child.id
    assert line["task_id"] == "task-7"
    assert line["parent_run_id"] == parent.id
    assert line["type"] == "agent_message"
    assert line["actor"] == "delegate"
    assert line["payload"] == {"text": "hello", "truncated": False}
    assert TS.match(event.ts)
    assert msgspec.json.decode(json.dumps(line), type=EventEnvelope) == event


def test_payloads_are_redacted_before_they_are_written(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    store.log.append(
        run.id,
        ToolCalled(
            tool="delegate.spawn",
            params={"Confirm-Nonce": "n-123", "nested": {"delegation_token": "x"}, "n": 2},
        ),
        actor=Actor.DELEGATE,
    )
    store.log.append(
        run.id, AgentMessage(text="key sk-abcdefghijklmnopqrstuv"), actor=Actor.DELEGATE
    )
    raw = store.home.events_mirror(run.id).read_text()
    assert "n-123" not in raw
    assert "sk-abcdefghijklmnopqrstuv" not in raw
    stored = store.db.execute_sql("SELECT payload FROM event").fetchall()
    assert not any("n-123" in row[0] for row in stored)
    params = db_lines(store, run.id)[1]["payload"]["params"]  # type: ignore[index]
    assert params == {
        "Confirm-Nonce": "[REDACTED]",
        "nested": {"delegation_token": "[REDACTED]"},
        "n": 2,
    }


def test_state_events_cannot_bypass_the_state_machine(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    with pytest.raises(ValueError, match="transition"):
        store.log.append(run.id, RunStarted(), actor=Actor.WORKER)
    assert store.log.last_seq(run.id) == 1


def test_unknown_run_writes_nothing(store: Store) -> None:
    with pytest.raises(UnknownRun):
        store.log.append("run_missing", StepStarted(step=1, kind="k"), actor=Actor.WORKER)
    assert store.db.execute_sql("SELECT count(*) FROM event").fetchone()[0] == 0


def test_rolled_back_transaction_leaves_no_trace(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    subscription = store.log.subscribe(run_id=run.id, after=1)
    with pytest.raises(RuntimeError), store.log.transaction() as tx:
        tx.append(run.id, StepStarted(step=1, kind="k"), actor=Actor.WORKER)
        tx.append(run.id, StepStarted(step=2, kind="k"), actor=Actor.WORKER)
        raise RuntimeError("boom")
    assert store.log.last_seq(run.id) == 1
    assert read_mirror(store.home.events_mirror(run.id)) == [1]
    assert subscription.get(timeout=0.2) == []
    store.log.append(run.id, StepStarted(step=3, kind="k"), actor=Actor.WORKER)
    assert [s.event.seq for s in subscription.get(timeout=2)] == [2]
    subscription.close()


def test_batch_append_is_one_transaction(store: Store) -> None:
    a = create_run(store.log, task="a", engine="rlm", actor=Actor.CLI)
    b = create_run(store.log, task="b", engine="rlm", actor=Actor.CLI)
    items = [
        (a.id if i % 2 else b.id, StepStarted(step=i, kind="k"), Actor.WORKER) for i in range(10)
    ]
    envelopes = store.log.append_many(items)
    assert [e.seq for e in envelopes if e.run_id == a.id] == [2, 3, 4, 5, 6]
    assert read_mirror(store.home.events_mirror(a.id)) == [1, 2, 3, 4, 5, 6]
    assert read_mirror(store.home.events_mirror(b.id)) == [1, 2, 3, 4, 5, 6]


def test_paging_by_seq_and_by_global_cursor(store: Store) -> None:
    a = create_run(store.log, task="a", engine="rlm", actor=Actor.CLI)
    b = create_run(store.log, task="b", engine="rlm", actor=Actor.CLI)
    for step in range(20):
        store.log.append(
            a.id if step % 2 else b.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER
        )
    assert [e.seq for e in store.log.page(a.id, after=3, limit=4)] == [4, 5, 6, 7]
    assert store.log.page(a.id, after=11) == []
    everything = store.log.page_all(limit=1000)
    cursors = [s.cursor for s in everything]
    assert cursors == sorted(cursors) and len(set(cursors)) == 22
    second_half = store.log.page_all(after_cursor=cursors[10], limit=1000)
    assert [s.cursor for s in second_half] == cursors[11:]


def test_mirror_equals_database(store: Store) -> None:
    run = create_run(store.log, task="t", engine="rlm", actor=Actor.CLI)
    transition(store.log, run.id, RunStarted(worker_id="w"), actor=Actor.WORKER)
    for step in range(50):
        store.log.append(run.id, StepStarted(step=step, kind="k"), actor=Actor.WORKER)
    assert mirror_lines(store, run.id) == db_lines(store, run.id)
