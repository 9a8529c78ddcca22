"""The ``app`` command line: one verb per job (DESIGN §10), each taking ``--home``.

Verbs whose issue has not landed yet are present, say so plainly on stderr and exit with
:data:`EXIT_NOT_AVAILABLE`; they never print fake output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.home import Home, resolve_home

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_AVAILABLE = 3

Handler = Callable[[argparse.Namespace], int]

#: Verbs that exist but whose implementation lands with a later issue.
PENDING_VERBS: dict[str, str] = {
    "desktop": "the desktop window lands with the UI issue",
    "tui": "the Textual TUI lands with the UI issue",
}


def _home_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--home",
        metavar="DIR",
        help="runner home (default: $CODEX_DELEGATION_HOME, else ~/.local/share/codex-delegation)",
    )
    return parent


def _overrides_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-c",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="per-run config override (repeatable; VALUE is a TOML value)",
    )
    parent.add_argument("--repo", type=Path, help="repository whose .codex/delegation.toml applies")
    return parent


def _pending(verb: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(f"app {verb}: not available yet: {PENDING_VERBS[verb]}.", file=sys.stderr)
        return EXIT_NOT_AVAILABLE

    return handler


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (used by :func:`main` and the docs)."""
    home = _home_option()
    overrides = _overrides_option()
    parser = argparse.ArgumentParser(
        prog="app",
        description="Codex Delegation Platform: a local control plane for coding agents.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    desktop = verbs.add_parser("desktop", parents=[home], help="runner + desktop window")
    desktop.set_defaults(handler=_pending("desktop"))

    serve = verbs.add_parser("serve", parents=[home], help="headless runner")
    serve.add_argument("--host", help="bind address (capped by ui.allowed_bind_hosts)")
    serve.add_argument("--port", type=int, help="port (0 = any free port)")
    serve.set_defaults(handler=_serve)

    for verb, text in (("tui", "terminal UI"),):
        sub = verbs.add_parser(verb, parents=[home], help=text)
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        sub.set_defaults(handler=_pending(verb))

    mcp = verbs.add_parser("mcp", parents=[home], help="MCP delegation server on stdio")
    mcp.add_argument(
        "--profile",
        choices=("full", "question_only"),
        default="full",
        help="full (a parent agent; default) or question_only (a delegate: status and questions)",
    )
    mcp.add_argument(
        "--no-autostart",
        dest="autostart",
        action="store_false",
        help="do not start a runner when none is up (fail the tool calls instead)",
    )
    mcp.set_defaults(handler=_mcp)

    install = verbs.add_parser(
        "install-codex",
        parents=[home],
        help="register the MCP server with Codex (disabled) and install the delegation skill",
    )
    install.add_argument(
        "--codex-home",
        type=Path,
        metavar="DIR",
        help="Codex's home (default: $CODEX_HOME, else ~/.codex)",
    )
    install.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="show what would change without writing anything",
    )
    install.set_defaults(handler=_install_codex)

    worker = verbs.add_parser("worker", parents=[home], help="stand-alone queue consumer")
    worker.add_argument("--workers", type=int, help="worker threads (default: queue.workers)")
    worker.set_defaults(handler=_worker)

    _add_remote_verbs(verbs, home, overrides)

    demo = verbs.add_parser("demo", parents=[home], help="a replayed RLM run over this repo")
    demo.add_argument(
        "--interactive", action="store_true", help="answer the delegate's question yourself"
    )
    demo.set_defaults(handler=_demo)

    config = verbs.add_parser("config", help="show the effective configuration")
    config_verbs = config.add_subparsers(dest="config_verb", metavar="VERB", required=True)
    show = config_verbs.add_parser(
        "show", parents=[home, overrides], help="print the effective config"
    )
    show.add_argument("--json", action="store_true", help="JSON with per-key provenance")
    show.set_defaults(handler=_config_show)
    explain = config_verbs.add_parser(
        "explain", parents=[home, overrides], help="which layer set KEY and which cap narrowed it"
    )
    explain.add_argument("key", metavar="KEY")
    explain.set_defaults(handler=_config_explain)

    db = verbs.add_parser("db", help="database schema and event mirrors")
    db_verbs = db.add_subparsers(dest="db_verb", metavar="VERB", required=True)
    db_verbs.add_parser("migrate", parents=[home], help="apply pending migrations").set_defaults(
        handler=_db_migrate
    )
    db_verbs.add_parser("status", parents=[home], help="list migrations").set_defaults(
        handler=_db_status
    )
    reconcile = db_verbs.add_parser(
        "reconcile", parents=[home], help="re-sync every events.jsonl mirror from the database"
    )
    reconcile.add_argument("--verify", action="store_true", help="check every line, not the tail")
    reconcile.set_defaults(handler=_db_reconcile)

    sandbox = verbs.add_parser("sandbox", help="RLM sandboxes")
    sandbox_verbs = sandbox.add_subparsers(dest="sandbox_verb", metavar="VERB", required=True)
    sandbox_verbs.add_parser(
        "check", parents=[home], help="say which sandboxes work on this machine"
    ).set_defaults(handler=_sandbox_check)
    _add_build_image(sandbox_verbs, home)
    return parser


def _add_build_image(sandbox_verbs: Any, home: argparse.ArgumentParser) -> None:
    build_image = sandbox_verbs.add_parser(
        "build-image",
        parents=[home],
        help="build the docker sandbox's image from this host's Python (no registry needed)",
    )
    build_image.add_argument("--tag", help="image name (default: rlm.docker_image)")
    build_image.add_argument(
        "--python", help="interpreter to copy in (default: /usr/bin/python3, else this one's)"
    )
    build_image.add_argument(
        "--force", action="store_true", help="rebuild even when the image is up to date"
    )
    build_image.set_defaults(handler=_sandbox_build_image)


def _add_remote_verbs(
    verbs: Any, home: argparse.ArgumentParser, overrides: argparse.ArgumentParser
) -> None:
    """The verbs that are clients of a live runner's API."""
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the API's JSON")
    runs = verbs.add_parser("runs", parents=[home, as_json], help="list, show and control runs")
    runs.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=("list", "show", "events", "pause", "resume", "cancel"),
    )
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--state", action="append", help="filter the list (repeatable)")
    runs.add_argument("--limit", type=int, default=50)
    runs.set_defaults(handler=_remote("runs"))

    spawn = verbs.add_parser(
        "spawn", parents=[home, as_json, overrides], help="spawn a delegate run"
    )
    spawn.add_argument("task")
    spawn.add_argument("--engine", choices=("rlm", "codex", "echo"))
    spawn.add_argument("--wait", action="store_true", help="wait until the run ends")
    spawn.set_defaults(handler=_remote("spawn"))

    questions = verbs.add_parser("questions", parents=[home, as_json], help="questions inbox")
    questions.add_argument(
        "action", nargs="?", default="list", choices=("list", "answer", "dismiss")
    )
    questions.add_argument("question_id", nargs="?")
    questions.add_argument("text", nargs="?")
    questions.add_argument("--status", default="pending")
    questions.set_defaults(handler=_remote("questions"))

    confirmations = verbs.add_parser(
        "confirmations", parents=[home, as_json], help="approve or deny destructive actions"
    )
    confirmations.add_argument(
        "action", nargs="?", default="list", choices=("list", "approve", "deny")
    )
    confirmations.add_argument("confirmation_id", nargs="?")
    confirmations.add_argument("--status", default="pending")
    confirmations.set_defaults(handler=_remote("confirmations"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``app`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        # `app` alone is the desktop app (DESIGN §10).
        return _pending("desktop")(args)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


# -- handlers ---------------------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Home:
    return resolve_home(getattr(args, "home", None))


def _config_show(args: argparse.Namespace) -> int:
    from app.config import commands

    return commands.show(
        repo=args.repo,
        overrides=args.overrides,
        fmt="json" if args.json else "toml",
        out=sys.stdout,
    )


def _config_explain(args: argparse.Namespace) -> int:
    from app.config import commands

    return commands.explain(args.key, repo=args.repo, overrides=args.overrides, out=sys.stdout)


def _db_migrate(args: argparse.Namespace) -> int:
    from db.connection import open_database
    from db.migrate import migrate

    home = _home(args).ensure()
    db = open_database(home.db_path)
    applied = migrate(db)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("nothing to apply: the schema is up to date")
    print(f"database: {home.db_path}")
    return EXIT_OK


def _db_status(args: argparse.Namespace) -> int:
    from db.connection import open_database
    from db.migrate import status

    home = _home(args)
    if not home.db_path.exists():
        print(f"no database at {home.db_path} (run `app db migrate --home {home.root}`)")
        return EXIT_ERROR
    db = open_database(home.db_path)
    for row in status(db):
        state = f"applied {row.applied_at}" if row.applied_at else "pending"
        if not row.file_present:
            state += " (file missing)"
        print(f"{row.name}  {state}")
    return EXIT_OK


def _db_reconcile(args: argparse.Namespace) -> int:
    from db.store import open_store

    store = open_store(_home(args))
    try:
        report = store.log.reconcile(verify=args.verify)
    finally:
        store.close()
    print(f"checked {report.runs_checked} runs; repaired {len(report.mirrors_repaired)}")
    for run_id in report.mirrors_repaired:
        print(f"repaired {run_id}")
    return EXIT_OK


def _sandbox_check(args: argparse.Namespace) -> int:
    from jobs.rlm.sandbox.choose import check_all

    checks = check_all()
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{check.name:<{width}}  {'yes' if check.available else 'no ':<3}  {check.detail}")
    return EXIT_OK if any(check.available for check in checks) else EXIT_ERROR


def _sandbox_build_image(args: argparse.Namespace) -> int:
    from jobs.rlm.sandbox.image import build_image_command

    return build_image_command(tag=args.tag, python=args.python, force=args.force)


def _remote(verb: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        from app import remote

        function: Handler = getattr(remote, verb)
        return function(args)

    return handler


def _demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(_home(args), interactive=args.interactive)


def _worker(args: argparse.Namespace) -> int:
    from jobs.worker import run_worker

    if args.workers is not None and args.workers < 1:
        print("app worker: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return run_worker(_home(args), workers=args.workers)


def _mcp(args: argparse.Namespace) -> int:
    from app.mcp.server import main as serve_mcp

    return serve_mcp(home=_home(args), profile=args.profile, autostart=args.autostart)


def _install_codex(args: argparse.Namespace) -> int:
    from app.mcp.install import main as install

    return install(codex_home=args.codex_home, home=args.home, print_only=args.print_only)


def _serve(args: argparse.Namespace) -> int:
    from app.runner import serve

    return serve(_home(args), host=args.host, port=args.port)


if __name__ == "__main__":
    raise SystemExit(main())
