"""`app demo`: the whole product in a minute, with no model and no Docker.

It spawns a delegate RLM run over this project's own repository, with the ``replay`` model
client (``app/demo/trajectory.jsonl``, a scripted trajectory) and the ``local`` sandbox
(the repository's ``.codex/delegation.toml`` allows it), then follows the run's live event
stream: the model searches the context, makes sub-calls, asks a question (the run pauses
until it is answered — by you with ``--interactive``, else by the demo), and finishes with
an answer and an artifact. It uses the runner already up for the home, or starts one for
the duration of the demo.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.client import RunnerNotFound, connect
from app.home import Home
from app.localrunner import ROOT, LiveRunner, start_runner

TRAJECTORY = Path(__file__).with_name("trajectory.jsonl")
TASK = "Explain what this repository is: its event types, its run state machine."
TERMINAL = {"succeeded", "failed", "cancelled", "budget_exceeded"}
DEFAULT_ANSWER = "detailed"


def _connect(home: Home) -> tuple[httpx.Client, LiveRunner | None]:
    """A client of the home's runner, starting one (for the demo's duration) if none is up."""
    try:
        return connect(home), None
    except RunnerNotFound:
        runner = start_runner(home)
        return runner.client(**{"X-Codex-Client": "cli"}), runner


def _describe(event: dict[str, Any]) -> str | None:
    kind, payload = event["type"], event["payload"]
    if kind == "context_search":
        return f"searched the context ({payload['hits']} hits)"
    if kind == "context_chunk_read":
        return f"read chunk {payload['chunk_id']}"
    if kind == "context_peek":
        return f"peeked at {payload['target']}"
    if kind == "subcall_started":
        return f"sub-call to a model (depth {payload['depth']})"
    if kind == "repl_exec":
        error = f", error: {payload['error'].splitlines()[-1]}" if payload.get("error") else ""
        return f"ran a cell ({payload['code_chars']} chars of code{error})"
    if kind in ("run_started", "run_paused", "run_resumed", "run_queued"):
        return str(kind).replace("_", " ")
    if kind == "artifact_written":
        return f"wrote artifacts/{payload['name']} ({payload['bytes']} bytes)"
    return None


def run_demo(home: Home, *, interactive: bool = False, out: TextIO = sys.stdout) -> int:
    """Run the demo; return 0 when the run succeeded."""
    client, started = _connect(home)
    try:
        response = client.post(
            "/api/runs",
            json={
                "task": TASK,
                "engine": "rlm",
                "repo": str(ROOT),
                "config": {
                    "rlm.environment": "local",
                    "rlm.lm_client": "replay",
                    "rlm.replay_path": str(TRAJECTORY),
                },
            },
        )
        if response.status_code != 201:
            print(f"app demo: the runner refused the run: {response.text}", file=sys.stderr)
            return 1
        run_id = response.json()["run"]["id"]
        print(f"spawned {run_id}: {TASK}", file=out, flush=True)
        return _follow(client, home, run_id, interactive=interactive, out=out)
    finally:
        client.close()
        if started is not None:
            started.stop()


def _follow(
    client: httpx.Client, home: Home, run_id: str, *, interactive: bool, out: TextIO
) -> int:
    answered: set[str] = set()
    event_type = ""
    deadline = time.monotonic() + 300
    with client.stream("GET", f"/api/runs/{run_id}/events/stream", timeout=None) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event_type = line[7:]
                continue
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            described = _describe(event)
            if described:
                print(f"  {event['seq']:>3} {described}", file=out, flush=True)
            if event_type == "question_queued":
                question = event["payload"]
                qid = question["question_id"]
                if qid not in answered:
                    answered.add(qid)
                    _answer(client, qid, question["prompt_preview"], interactive, out)
            if event_type in ("run_completed", "run_failed", "run_cancelled", "budget_exceeded"):
                break
            if time.monotonic() > deadline:
                print("app demo: the run took too long", file=sys.stderr)
                return 1
    run = client.get(f"/api/runs/{run_id}").json()
    if run["state"] != "succeeded":
        print(f"the run ended {run['state']}: {run['state_reason']}", file=out)
        return 1
    answer = client.get(f"/api/runs/{run_id}/events", params={"limit": 1000}).json()["events"][-1]
    print(f"\nanswer: {answer['payload']['answer_preview']}", file=out)
    artifact = home.run_dir(run_id) / "artifacts" / "demo-report.md"
    print(f"artifact: {artifact}\n", file=out)
    print(artifact.read_text(encoding="utf-8"), file=out, flush=True)
    return 0


def _answer(client: httpx.Client, qid: str, prompt: str, interactive: bool, out: TextIO) -> None:
    print(f"\n  the delegate asks: {prompt}", file=out, flush=True)
    print("  (the run is paused until the question is answered)", file=out, flush=True)
    if interactive:
        reply = input("  your answer> ").strip() or DEFAULT_ANSWER
    else:
        time.sleep(1.0)
        reply = DEFAULT_ANSWER
        print(f"  answering for you: {reply}\n", file=out, flush=True)
    client.post(f"/api/questions/{qid}/answer", json={"answer": reply}).raise_for_status()
