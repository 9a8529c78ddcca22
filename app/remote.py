"""CLI verbs that talk to the runner: runs, spawn, questions, confirmations.

Each prints a short human-readable answer (or the API's JSON with ``--json``) and returns an
exit code: 0 done, 1 the runner refused or is not up (its message is printed as it is).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from app.client import ApiError, RunnerNotFound, call, connect
from app.home import resolve_home

TERMINAL = {"succeeded", "failed", "cancelled", "budget_exceeded"}


def _run(args: argparse.Namespace, body: Callable[[Any], int]) -> int:
    try:
        client = connect(resolve_home(args.home))
    except RunnerNotFound as error:
        print(f"app {args.verb}: {error}", file=sys.stderr)
        return 1
    try:
        return body(client)
    except ApiError as error:
        print(f"app {args.verb}: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


def runs(args: argparse.Namespace) -> int:
    """``app runs [list|show RUN|events RUN|pause RUN|resume RUN|cancel RUN]``."""

    def body(client: Any) -> int:
        if args.action == "list":
            params: dict[str, Any] = {"limit": args.limit}
            if args.state:
                params["state"] = args.state
            data = call(client, "GET", "/api/runs", params=params)
            lines = [
                f"{r['id']}  {r['state']:<15} {r['engine']:<6} {r['task'][:60]}"
                for r in data["runs"]
            ]
            _print(args, data, "\n".join(lines) or "no runs")
            return 0
        if not args.run_id:
            print(f"app runs {args.action}: give a run id", file=sys.stderr)
            return 2
        if args.action in ("pause", "resume", "cancel"):
            request = {"action": args.action, "request_id": uuid.uuid4().hex}
            result = call(client, "POST", f"/api/runs/{args.run_id}/control", json=request)
            _print(args, result, f"{args.run_id}  {result['state']}")
            return 0
        if args.action == "show":
            run = call(client, "GET", f"/api/runs/{args.run_id}")
            reason = f" ({run['state_reason']})" if run["state_reason"] else ""
            _print(args, run, f"{run['id']}  {run['state']}{reason}\n{run['task']}")
            return 0
        page = call(client, "GET", f"/api/runs/{args.run_id}/events", params={"limit": 1000})
        lines = [
            f"{e['seq']:>4} {e['ts']} {e['type']:<22} {json.dumps(e['payload'])[:100]}"
            for e in page["events"]
        ]
        _print(args, page, "\n".join(lines))
        return 0

    return _run(args, body)


def spawn(args: argparse.Namespace) -> int:
    """``app spawn TASK [--engine E] [--repo PATH] [-c key=value]... [--wait]``."""

    def body(client: Any) -> int:
        config: dict[str, Any] = {}
        for entry in args.overrides:
            key, sep, value = entry.partition("=")
            if not sep or not key.strip():
                print(f"app spawn: -c takes key=value, got {entry!r}", file=sys.stderr)
                return 2
            config[key.strip()] = _toml_value(value)
        request: dict[str, Any] = {"task": args.task, "config": config}
        if args.engine:
            request["engine"] = args.engine
        if args.repo:
            request["repo"] = str(args.repo.resolve())
        created = call(client, "POST", "/api/runs", json=request)
        run = created["run"]
        if not args.wait:
            _print(args, created, f"{run['id']}  {run['state']}")
            return 0
        while run["state"] not in TERMINAL:
            time.sleep(0.2)
            run = call(client, "GET", f"/api/runs/{run['id']}")
        _print(args, run, f"{run['id']}  {run['state']}")
        return 0 if run["state"] == "succeeded" else 1

    return _run(args, body)


def questions(args: argparse.Namespace) -> int:
    """``app questions [list|answer QID TEXT|dismiss QID]``."""

    def body(client: Any) -> int:
        if args.action == "list":
            data = call(client, "GET", "/api/questions", params={"status": args.status})
            lines = [f"{q['id']}  {q['run_id']}  {q['prompt'][:80]}" for q in data["questions"]]
            _print(args, data, "\n".join(lines) or f"no {args.status} questions")
            return 0
        if not args.question_id:
            print(f"app questions {args.action}: give a question id", file=sys.stderr)
            return 2
        if args.action == "answer":
            if not args.text:
                print("app questions answer: give the answer text", file=sys.stderr)
                return 2
            data = call(
                client,
                "POST",
                f"/api/questions/{args.question_id}/answer",
                json={"answer": args.text},
            )
        else:
            data = call(client, "POST", f"/api/questions/{args.question_id}/dismiss", json={})
        _print(args, data, f"{data['id']}  {data['status']}")
        return 0

    return _run(args, body)


def confirmations(args: argparse.Namespace) -> int:
    """``app confirmations [list|approve CID|deny CID]``."""

    def body(client: Any) -> int:
        if args.action == "list":
            data = call(client, "GET", "/api/confirmations", params={"status": args.status})
            lines = [
                f"{c['id']}  {c['action']:<8} run {c['run_id']}  expires {c['expires_at']}"
                for c in data["confirmations"]
            ]
            _print(args, data, "\n".join(lines) or f"no {args.status} confirmations")
            return 0
        if not args.confirmation_id:
            print(f"app confirmations {args.action}: give a confirmation id", file=sys.stderr)
            return 2
        data = call(
            client, "POST", f"/api/confirmations/{args.confirmation_id}/{args.action}", json={}
        )
        _print(args, data, f"{data['id']}  {data['status']}")
        return 0

    return _run(args, body)


def _toml_value(text: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
