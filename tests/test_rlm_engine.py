"""The RLM engine on the real run loop, a real sandbox and a replayed model.

Deterministic suite: scripted root/sub models (trajectory files) over generated contexts
with fixed seeds. Adversarial suite: models and cells that try to break out or never stop.
Every test runs once per sandbox (``local``, ``docker``): a sandbox that does not work here is
skipped with the reason, and fails the test in CI; a docker test also checks that no
container of its runs is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.control.spawn import spawn_run
from app.home import Home
from app.wire.events import Actor
from db.runs import get_run
from db.store import Store
from jobs.leases import new_owner_id
from jobs.rlm.loop import DEFAULT_ANSWER_MARK
from jobs.rlm.sandbox.docker import LABEL_PID, connect
from jobs.rlm.synthetic import make_corpus
from jobs.runloop import WorkerContext, execute_run
from tests.conftest import start_runner
from tests.test_execution import TERMINAL, events, wait_state
from tests.test_sandbox import (
    SANDBOXES,
    assert_no_containers,
    require_sandbox,
    sandbox_containers,
)

pytestmark = pytest.mark.slow
#: The sandbox the current test's runs use (``rlm.environment``); set by :func:`sandbox`.
ENVIRONMENT = {"name": "local"}


@pytest.fixture(params=SANDBOXES, autouse=True)
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run the test once per sandbox; after a docker one, no container of its runs is left."""
    require_sandbox(request.param)
    ENVIRONMENT["name"] = request.param
    yield request.param
    if request.param == "docker":
        assert_no_containers(tmp_path)


def make_repo(
    root: Path, *, seed: int = 7, files: int = 12, lines: int = 40, **needles: str
) -> dict[str, Any]:
    truth = make_corpus(root, seed=seed, files=files, lines_per_file=lines, needles=needles)
    (root / ".codex").mkdir(exist_ok=True)
    (root / ".codex" / "delegation.toml").write_text(
        '[rlm]\nallowed_environments = ["docker", "local"]\n'
    )
    return truth


def trajectory(path: Path, *calls: tuple[str, str]) -> Path:
    with path.open("w") as handle:
        for kind, text in calls:
            handle.write(json.dumps({"kind": kind, "text": text}) + "\n")
    return path


def repl(code: str) -> str:
    return f"Working on it.\n```repl\n{code}\n```"


def run_rlm(
    store: Store, repo: Path, traj: Path, **config: Any
) -> tuple[str, list[dict[str, Any]]]:
    overrides = {
        "rlm.environment": ENVIRONMENT["name"],
        "rlm.lm_client": "replay",
        "rlm.replay_path": str(traj),
        "rlm.cell_timeout_ms": 5000,
        **config,
    }
    run = spawn_run(
        store.log,
        task="solve it",
        actor=Actor.CLI,
        repo=str(repo),
        engine="rlm",
        overrides=overrides,
    )
    execute_run(WorkerContext(log=store.log, owner=new_owner_id()), run.id)
    state = get_run(store.log, run.id)
    evts = [{"type": e.type, "payload": e.payload} for e in store.log.page(run.id, limit=10_000)]
    return state.state, evts


def payloads(evts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in evts if e["type"] == kind]


def answer_of(evts: list[dict[str, Any]]) -> str:
    return payloads(evts, "run_completed")[-1]["answer_preview"]


# -- deterministic suite ---------------------------------------------------------------------


def test_needle_search_with_no_subcalls(store: Store, tmp_path: Path) -> None:
    truth = make_repo(tmp_path / "repo", needle="MAGIC-VALUE = 91731")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("hits = context.search('MAGIC-VALUE')\nprint(len(hits), hits[0]['path'])")),
        (
            "root",
            repl(
                "where = hits[0]['path'] + ':' + str(hits[0]['line'])\n"
                "line = context.peek(where, 80)\n"
                "FINAL(line.split('=')[1].split()[0])"
            ),
        ),
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj)
    assert state == "succeeded"
    assert answer_of(evts) == "91731"
    assert payloads(evts, "subcall_started") == []
    assert payloads(evts, "context_search")[0]["hits"] == 1
    assert truth["needles"]["needle"]["path"]


def test_semantic_needle_needs_one_subcall_per_chunk(store: Store, tmp_path: Path) -> None:
    from jobs.rlm.context import ContextStore

    make_repo(tmp_path / "repo", files=4, lines=30)
    probe = ContextStore([tmp_path / "repo"], [tmp_path / "repo"])
    ids = list(dict.fromkeys(h["chunk_id"] for h in probe.search(".", regex=True, max_results=500)))
    assert len(ids) == probe.stats()["chunks"] > 2
    scan = (
        "found = []\n"
        "ids = [h['chunk_id'] for h in context.search('.', regex=True, max_results=500)]\n"
        "ids = list(dict.fromkeys(ids))\n"
        "for cid in ids:\n"
        "    text = context.read_chunk(cid)[:200]\n"
        "    verdict = llm_query('Does this chunk talk about refunds? ' + text)\n"
        "    if verdict.strip() == 'yes':\n"
        "        found.append(cid)\n"
        "FINAL(found[0] if found else 'none')"
    )
    sub_answers = [("sub", "yes" if index == 2 else "no") for index in range(len(ids))]
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("print(context.stats()['chunks'])")),
        ("root", repl(scan)),
        *sub_answers,
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj)
    assert state == "succeeded", evts[-1]
    assert len(payloads(evts, "subcall_started")) == len(ids)
    assert answer_of(evts) == ids[2]


def test_counting_aggregation(store: Store, tmp_path: Path) -> None:
    truth = make_repo(tmp_path / "repo", seed=11, files=20, lines=50)
    expected = len(truth["todos"])
    code = (
        "hits = context.search('TODO(', max_results=100000)\n"
        "owners = {}\n"
        "for h in hits:\n"
        "    owner = h['snippet'].split('TODO(')[1].split(')')[0]\n"
        "    owners[owner] = owners.get(owner, 0) + 1\n"
        "print(owners)\n"
        "FINAL(str(len(hits)))"
    )
    state, evts = run_rlm(
        store, tmp_path / "repo", trajectory(tmp_path / "t.jsonl", ("root", repl(code)))
    )
    assert state == "succeeded"
    assert answer_of(evts) == str(expected)


def test_long_answer_built_in_a_variable(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    code = (
        "report = '\\n'.join(f'line {i}: ' + 'x' * 50 for i in range(400))\n"
        "write_artifact('report.md', report)\n"
        "FINAL_VAR('report')"
    )
    state, evts = run_rlm(
        store, tmp_path / "repo", trajectory(tmp_path / "t.jsonl", ("root", repl(code)))
    )
    assert state == "succeeded"
    assert answer_of(evts).startswith("line 0: xxx")
    artifact = (
        store.home.runs_dir
        / next(iter(os.listdir(store.home.runs_dir)))
        / "artifacts"
        / "report.md"
    )
    assert artifact.read_text().count("\n") == 399
    assert payloads(evts, "artifact_written")[0]["name"] == "report.md"


def test_depth_two_recursion(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    root = repl("part = rlm_query('Find the answer for part A')\nFINAL('combined: ' + part)")
    child_turn = repl("x = llm_query('leaf question')\nFINAL('A=' + x)")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", root),
        ("sub", child_turn),  # the depth-1 child's own model turn
        ("sub", "42"),  # its llm_query at depth 2
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj, **{"rlm.max_subcall_depth": 2})
    assert state == "succeeded", evts[-1]
    assert answer_of(evts) == "combined: A=42"
    depths = sorted(p["depth"] for p in payloads(evts, "subcall_started"))
    assert depths == [1, 2]
    assert [p["kind"] for p in payloads(evts, "subcall_started")] == ["rlm_query", "llm_query"]


def test_rlm_query_at_the_depth_cap_falls_back_to_llm_query(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("FINAL(rlm_query('quick one'))")),
        ("sub", "plain answer"),
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj)
    assert state == "succeeded"
    assert answer_of(evts) == "plain answer"
    assert len(payloads(evts, "subcall_started")) == 1


# -- adversarial suite -----------------------------------------------------------------------


def test_a_model_that_never_finishes(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    turns = [("root", repl(f"print({i})")) for i in range(3)]
    traj = trajectory(tmp_path / "t.jsonl", *turns, ("root", "My best guess is 17."))
    state, evts = run_rlm(store, tmp_path / "repo", traj, **{"rlm.max_iterations": 3})
    assert state == "budget_exceeded"
    exceeded = payloads(evts, "budget_exceeded")[0]
    assert exceeded["budget"] == "rlm.max_iterations"
    assert exceeded["partial_answer"].startswith(DEFAULT_ANSWER_MARK)
    assert "17" in exceeded["partial_answer"]


def test_an_infinite_loop_is_interrupted_and_the_repl_survives(
    store: Store, tmp_path: Path
) -> None:
    make_repo(tmp_path / "repo")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("kept = 5\nwhile True:\n    pass")),
        ("root", repl("FINAL(str(kept * 2))")),
    )
    started = time.monotonic()
    state, evts = run_rlm(store, tmp_path / "repo", traj, **{"rlm.cell_timeout_ms": 500})
    assert state == "succeeded"
    assert answer_of(evts) == "10", "the REPL kept its state after the interrupt"
    assert "timeout" in payloads(evts, "repl_exec")[0]["error"]
    assert time.monotonic() - started < 30


def test_ten_thousand_llm_queries_hit_the_subcall_budget(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    code = "out = []\nfor i in range(10000):\n    out.append(llm_query('q' + str(i)))"
    subs = [("sub", "a")] * 5
    traj = trajectory(tmp_path / "t.jsonl", ("root", repl(code)), *subs)
    state, evts = run_rlm(store, tmp_path / "repo", traj, **{"rlm.max_subcalls": 5})
    assert state == "budget_exceeded"
    assert payloads(evts, "budget_exceeded")[0]["budget"] == "rlm.max_subcalls"
    assert len(payloads(evts, "subcall_started")) == 5


def test_reassigning_the_helpers_does_not_stick(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo", needle="ZEBRA-77")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("llm_query = None\ncontext = 'gone'\nFINAL = print")),
        ("root", repl("FINAL(str(len(context.search('ZEBRA-77'))))")),
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj)
    assert state == "succeeded"
    assert answer_of(evts) == "1"


def test_a_ten_megabyte_print_is_truncated(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("print('x' * 10_000_000)")),
        ("root", repl("FINAL('done')")),
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj, **{"rlm.max_output_chars": 1000})
    assert state == "succeeded"
    assert payloads(evts, "repl_exec")[0]["stdout_chars"] <= 1000


def test_final_in_prose_is_not_an_answer(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", "I know it! FINAL(99)"),
        ("root", repl("FINAL('from code')")),
    )
    state, evts = run_rlm(store, tmp_path / "repo", traj)
    assert state == "succeeded"
    assert answer_of(evts) == "from code"


def test_escapes_from_a_cell_are_refused(store: Store, tmp_path: Path) -> None:
    import socket
    import threading

    make_repo(tmp_path / "repo")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    home = store.home.root
    code = (
        "import socket, os\n"
        "results = {}\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); results['net'] = 'open'\n"
        "except OSError as e:\n"
        "    results['net'] = 'refused'\n"
        "try:\n"
        "    open('/etc/escape-test', 'w').write('x'); results['write'] = 'open'\n"
        "except OSError:\n"
        "    results['write'] = 'refused'\n"
        f"results['home_visible'] = os.path.exists({str(home)!r})\n"
        "open('/scratch/ok.txt', 'w').write('fine')\n"
        "print(results)\n"
        "FINAL(repr(sorted(results.items())))"
    )
    state, evts = run_rlm(
        store, tmp_path / "repo", trajectory(tmp_path / "t.jsonl", ("root", repl(code)))
    )
    listener.close()
    assert state == "succeeded"
    assert answer_of(evts) == "[('home_visible', False), ('net', 'refused'), ('write', 'refused')]"
    assert accepted == []


# -- pause/resume and crash recovery over a live runner --------------------------------------


@pytest.fixture
def rlm_repo(tmp_path: Path) -> Path:
    make_repo(tmp_path / "repo", needle="ANSWER-TOKEN 5150")
    return tmp_path / "repo"


def slow_trajectory(path: Path) -> Path:
    # Four slow iterations that build state, then the answer from that state.
    turns = [
        ("root", repl(f"import time\ntime.sleep(0.6)\nacc = {i} if {i} == 0 else acc + {i}"))
        for i in range(4)
    ]
    final = (
        "root",
        repl(
            "hit = context.search('ANSWER-TOKEN')[0]['snippet']\n"
            "FINAL(hit.split()[-1] + '/' + str(acc))"
        ),
    )
    return trajectory(path, *turns, final)


def spawn_rlm(api: Any, repo: Path, traj: Path) -> str:
    body = {
        "task": "find the token",
        "engine": "rlm",
        "repo": str(repo),
        "config": {
            "rlm.environment": ENVIRONMENT["name"],
            "rlm.lm_client": "replay",
            "rlm.replay_path": str(traj),
        },
    }
    response = api.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run"]["id"]
    return run_id


def test_pause_and_resume_mid_run_gives_the_same_answer(tmp_path: Path, rlm_repo: Path) -> None:
    runner = start_runner(Home(tmp_path / "home"))
    try:
        with runner.client() as api:
            run_id = spawn_rlm(api, rlm_repo, slow_trajectory(tmp_path / "t.jsonl"))
            wait_state(api, run_id, {"running"})
            time.sleep(1.0)
            api.post(f"/api/runs/{run_id}/control", json={"action": "pause", "request_id": "p"})
            wait_state(api, run_id, {"paused"}, timeout=30)
            api.post(f"/api/runs/{run_id}/control", json={"action": "resume", "request_id": "r"})
            run = wait_state(api, run_id, TERMINAL, timeout=60)
            assert run["state"] == "succeeded", run
            assert events(api, run_id)[-1]["payload"]["answer_preview"] == "5150/6"
    finally:
        assert runner.stop() == 0


def test_kill_9_mid_run_then_resume_gives_the_same_answer(
    tmp_path: Path, rlm_repo: Path, sandbox: str
) -> None:
    home = Home(tmp_path / "home")
    first = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES="runner.sweep_interval_s=1")
    with first.client() as api:
        run_id = spawn_rlm(api, rlm_repo, slow_trajectory(tmp_path / "t.jsonl"))
        wait_state(api, run_id, {"running"})
        time.sleep(1.5)
    in_flight = _first_runners_containers(tmp_path, first.proc.pid) if sandbox == "docker" else []
    if sandbox == "docker":
        assert in_flight, "the run's container should be running when the runner is killed"
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    second = start_runner(home, CODEX_DELEGATION_CONFIG_OVERRIDES="runner.sweep_interval_s=1")
    if sandbox == "docker":
        # The new runner's recovery removed the dead runner's container (its maker is gone).
        assert _first_runners_containers(tmp_path, first.proc.pid) == []
    try:
        with second.client() as api:
            run = wait_state(api, run_id, TERMINAL, timeout=60)
            assert run["state"] == "succeeded", run
            assert events(api, run_id)[-1]["payload"]["answer_preview"] == "5150/6"
            types_seen = [e["type"] for e in events(api, run_id)]
            assert "run_interrupted" in types_seen
    finally:
        assert second.stop() == 0


def test_cancel_mid_cell_stops_the_sandbox_at_once(
    tmp_path: Path, rlm_repo: Path, sandbox: str
) -> None:
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl("import time\ntime.sleep(60)")),
        ("root", repl("FINAL('never')")),
    )
    runner = start_runner(Home(tmp_path / "home"))
    try:
        with runner.client() as api:
            run_id = spawn_rlm(api, rlm_repo, traj)
            wait_state(api, run_id, {"running"})
            deadline = time.monotonic() + 10
            while sandbox == "docker" and not sandbox_containers(tmp_path):
                assert time.monotonic() < deadline, "no container for the run"
                time.sleep(0.05)
            time.sleep(0.5)  # inside the cell
            started = time.monotonic()
            api.post(f"/api/runs/{run_id}/control", json={"action": "cancel", "request_id": "c"})
            run = wait_state(api, run_id, TERMINAL, timeout=10)
            assert run["state"] == "cancelled", run
            if sandbox == "docker":
                assert_no_containers(tmp_path, wait_s=5)
            assert time.monotonic() - started < 5
            assert "run_completed" not in [e["type"] for e in events(api, run_id)]
    finally:
        assert runner.stop() == 0


def _first_runners_containers(under: Path, pid: int) -> list[str]:
    client = connect()
    return [
        name
        for name in sandbox_containers(under)
        if client.api.inspect_container(name)["Config"]["Labels"].get(LABEL_PID) == str(pid)
    ]


def test_ask_pauses_the_run_until_a_person_answers(tmp_path: Path, rlm_repo: Path) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("w") as handle:
        handle.write(
            json.dumps({"kind": "root", "text": repl("qid = ask('Which format, md or txt?')")})
            + "\n"
        )
        handle.write(
            json.dumps(
                {
                    "kind": "root",
                    "match": "Answer to your question",
                    "text": repl("write_artifact('answer.md', 'as asked')\nFINAL('format: md')"),
                }
            )
            + "\n"
        )
    runner = start_runner(Home(tmp_path / "home"))
    try:
        with runner.client() as api:
            run_id = spawn_rlm(api, rlm_repo, path)
            wait_state(api, run_id, {"paused"}, timeout=30)
            [question] = api.get("/api/questions", params={"run_id": run_id}).json()["questions"]
            assert question["prompt"] == "Which format, md or txt?"
            assert question["auto_pause"] is True
            answered = api.post(f"/api/questions/{question['id']}/answer", json={"answer": "md"})
            assert answered.status_code == 200
            run = wait_state(api, run_id, TERMINAL, timeout=30)
            assert run["state"] == "succeeded", run
            seen = [e["type"] for e in events(api, run_id)]
            for expected in ("question_queued", "run_paused", "question_answered", "run_resumed"):
                assert expected in seen, seen
        artifact = runner.home.run_dir(run_id) / "artifacts" / "answer.md"
        assert artifact.read_text() == "as asked"
    finally:
        assert runner.stop() == 0


def test_a_fork_bomb_and_a_memory_hog_are_contained(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    fork_bomb = (
        "import os\n"
        "children = 0\n"
        "try:\n"
        "    for _ in range(10000):\n"
        "        if os.fork() == 0:\n"
        "            import time; time.sleep(30); os._exit(0)\n"
        "        children += 1\n"
        "except OSError as error:\n"
        "    print('fork refused after', children, type(error).__name__)"
    )
    memory_hog = (
        "hog = []\n"
        "try:\n"
        "    while True:\n"
        "        hog.append(bytearray(50 * 1024 * 1024))\n"
        "except MemoryError:\n"
        "    hog = None\n"
        "    print('memory refused')"
    )
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl(fork_bomb)),
        ("root", repl(memory_hog)),
        ("root", repl("FINAL('still alive')")),
    )
    state, evts = run_rlm(
        store, tmp_path / "repo", traj, **{"sandbox.pids_limit": 32, "sandbox.memory_mb": 256}
    )
    assert state == "succeeded", evts[-1]
    assert answer_of(evts) == "still alive"
    cells = payloads(evts, "repl_exec")
    assert len(cells) == 3
    assert cells[0]["stdout_chars"] > 0 and cells[1]["stdout_chars"] > 0


def test_on_budget_exceeded_pause_pauses_instead_of_ending(store: Store, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    code = "for i in range(10):\n    llm_query('q')"
    traj = trajectory(tmp_path / "t.jsonl", ("root", repl(code)), *[("sub", "a")] * 2)
    state, evts = run_rlm(
        store,
        tmp_path / "repo",
        traj,
        **{"rlm.max_subcalls": 2, "rlm.on_budget_exceeded": "pause"},
    )
    assert state == "paused"
    paused = payloads(evts, "run_paused")[-1]
    assert "rlm.max_subcalls" in paused["reason"]


def test_pause_applies_between_sub_calls(tmp_path: Path, rlm_repo: Path) -> None:
    first = (
        "import time\n"
        "results = []\n"
        "for i in range(20):\n"
        "    time.sleep(0.1)\n"
        "    results.append(llm_query('item ' + str(i)))"
    )
    second = (
        "for i in range(len(results), 20):\n"
        "    results.append(llm_query('item ' + str(i)))\n"
        "FINAL(str(len(results)) + ' ' + results[-1])"
    )
    traj = trajectory(
        tmp_path / "t.jsonl",
        ("root", repl(first)),
        ("root", repl(second)),
        *[("sub", f"answer {i}") for i in range(20)],
    )
    runner = start_runner(Home(tmp_path / "home"))
    try:
        with runner.client() as api:
            run_id = spawn_rlm(api, rlm_repo, traj)
            wait_state(api, run_id, {"running"})
            time.sleep(0.6)
            api.post(f"/api/runs/{run_id}/control", json={"action": "pause", "request_id": "p"})
            wait_state(api, run_id, {"paused"}, timeout=10)
            made = [e for e in events(api, run_id) if e["type"] == "subcall_started"]
            assert 0 < len(made) < 20, "the pause took effect between sub-calls, mid-cell"
            api.post(f"/api/runs/{run_id}/control", json={"action": "resume", "request_id": "r"})
            run = wait_state(api, run_id, TERMINAL, timeout=30)
            assert run["state"] == "succeeded", run
            assert events(api, run_id)[-1]["payload"]["answer_preview"] == "20 answer 19"
    finally:
        assert runner.stop() == 0
