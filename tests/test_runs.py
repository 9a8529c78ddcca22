"""Creating runs: directory layout, manifest, all-or-nothing."""

from __future__ import annotations

import json
import stat

import pytest

from app.wire.events import Actor
from db.eventlog import UnknownRun
from db.runs import RUN_SUBDIRS, create_run, get_run
from db.store import Store


def test_create_run_lays_out_its_directory(store: Store) -> None:
    run = create_run(
        store.log,
        task="summarise the repo",
        engine="rlm",
        actor=Actor.CLI,
        config={"rlm": {"max_iterations": 5}, "codex": {"api_key": "sk-should-not-appear-1234"}},
        config_sources={"rlm.max_iterations": "run"},
    )
    run_dir = store.home.run_dir(run.id)
    for name in RUN_SUBDIRS:
        assert (run_dir / name).is_dir()
    manifest_path = run_dir / "manifest.json"
    assert stat.S_IMODE(manifest_path.stat().st_mode) == 0o600
    manifest = json.loads(manifest_path.read_text())
    assert manifest["run"]["id"] == run.id
    assert manifest["config"]["rlm"] == {"max_iterations": 5}
    assert manifest["config_sources"] == {"rlm.max_iterations": "run"}
    assert "sk-should-not-appear" not in manifest_path.read_text()
    assert run.state == "queued" and run.last_seq == 1
    assert get_run(store.log, run.id) == run


def test_failed_creation_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(UnknownRun, match="run_does_not_exist"):
        create_run(
            store.log, task="t", engine="rlm", actor=Actor.CLI, parent_run_id="run_does_not_exist"
        )
    assert store.db.execute_sql("SELECT count(*) FROM run").fetchone()[0] == 0
    assert store.db.execute_sql("SELECT count(*) FROM event").fetchone()[0] == 0
    assert list(store.home.runs_dir.iterdir()) == []
