"""Everything a live runner holds: store, services, secrets, background threads.

Built once per runner process by :meth:`Runtime.open`; the HTTP app reads it, ``app serve``
and the desktop window start and stop it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from app.api.security import SecurityPolicy
from app.api.sessions import SessionStore
from app.clock import now_ts
from app.config import ResolvedConfig
from app.control.confirmations import ConfirmationService, load_or_create_key
from app.control.questions import QuestionService
from app.control.sweeper import Sweeper
from app.control.tokens import CONTROL_PREFIX, check_delegation_token, hash_secret, new_secret
from app.files import write_private_json
from app.home import Home
from db.store import Store, open_store
from db.watcher import DataVersionWatcher
from jobs.dispatch import Dispatcher
from jobs.leases import new_owner_id
from jobs.queue import RunQueue, build_huey
from jobs.recovery import RecoveryLoop, recover
from jobs.runloop import WorkerContext, execute_run

CONFIRM_KEY_FILE = "confirm_key"


@dataclass
class Runtime:
    """The state of one runner process."""

    home: Home
    config: ResolvedConfig
    store: Store
    sessions: SessionStore
    policy: SecurityPolicy
    questions: QuestionService
    confirmations: ConfirmationService
    sweeper: Sweeper
    watcher: DataVersionWatcher
    worker: WorkerContext
    queue: RunQueue
    dispatcher: Dispatcher
    recovery: RecoveryLoop
    queue_watcher: DataVersionWatcher | None
    control_token: str = field(repr=False)
    base_url: str = ""
    #: Seconds between SSE heartbeat comments on an idle stream (``ui.sse_heartbeat_s``).
    sse_heartbeat_s: float = 15.0

    @classmethod
    def open(cls, home: Home, config: ResolvedConfig) -> Runtime:
        """Open the home's store and build the services (nothing is started yet)."""
        store = open_store(
            home,
            synchronous=config.get("db.synchronous"),
            busy_timeout_ms=config.get("db.busy_timeout_ms"),
        )
        log = store.log
        token = new_secret(CONTROL_PREFIX)
        sessions = SessionStore()
        policy = SecurityPolicy(
            control_token_hash=hash_secret(token),
            sessions=sessions,
            delegation_lookup=lambda candidate: check_delegation_token(log, candidate),
        )
        questions = QuestionService(
            log,
            default_ttl_s=config.get("questions.ttl_s"),
            default_fallback=config.get("questions.expiry_fallback"),
            max_wait_ms=config.get("questions.max_wait_ms"),
        )
        confirmations = ConfirmationService(
            log,
            key=load_or_create_key(home.root / CONFIRM_KEY_FILE),
            ttl_s=config.get("confirm.ttl_s"),
            max_pending=config.get("confirm.max_pending"),
        )
        worker = WorkerContext(
            log=log, owner=new_owner_id(), lease_ttl_s=float(config.get("runner.lease_ttl_s"))
        )
        queue = RunQueue(
            build_huey(home, config.get("queue.backend"), config.get("queue.url")),
            lambda run_id: execute_run(worker, run_id),
        )
        dispatcher = Dispatcher(log, queue)
        queue_watcher = (
            DataVersionWatcher(home.queue_db_path, queue.wake.set)
            if config.get("queue.backend") == "sqlite"
            else None
        )
        return cls(
            home=home,
            config=config,
            store=store,
            sessions=sessions,
            policy=policy,
            questions=questions,
            confirmations=confirmations,
            sweeper=Sweeper(
                questions=questions,
                confirmations=confirmations,
                interval_s=config.get("runner.sweep_interval_s"),
            ),
            watcher=DataVersionWatcher(home.db_path, log.hub.notify),
            worker=worker,
            queue=queue,
            dispatcher=dispatcher,
            recovery=RecoveryLoop(
                log,
                own_owner=worker.owner,
                interval_s=config.get("runner.sweep_interval_s"),
                # A run queued this long has lost its message: send another (harmless if not).
                also=lambda: dispatcher.redispatch_stale(6 * config.get("runner.sweep_interval_s")),
            ),
            queue_watcher=queue_watcher,
            control_token=token,
            sse_heartbeat_s=config.get("ui.sse_heartbeat_s"),
        )

    def start(self, host: str, port: int) -> None:
        """Accept ``host:port``, write the endpoint files and start background threads."""
        self.policy.allow_host(host, port)
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{port}"
        write_private_json(
            self.home.auth_path, {"token": self.control_token, "created_at": now_ts()}
        )
        write_private_json(
            self.home.endpoint_path,
            {
                "base_url": self.base_url,
                "token_path": str(self.home.auth_path),
                "pid": os.getpid(),
                "started_at": now_ts(),
            },
        )
        self.watcher.start()
        self.sweeper.start()
        # Runs a previous runner (or a dead worker) left running: interrupt, then requeue/fail.
        recover(self.store.log, own_owner=self.worker.owner)
        self.recovery.start()
        workers = int(self.config.get("queue.workers"))
        if workers:
            self.queue.start_consumer(workers)
        if self.queue_watcher is not None:
            self.queue_watcher.start()
        self.dispatcher.start()

    def login_url(self) -> str:
        """A fresh one-time UI login URL."""
        code, _ = self.sessions.new_login_code()
        return f"{self.base_url}/ui/login?code={code}"

    def stop(self) -> None:
        """Stop threads, hand running runs back to the queue, remove the endpoint files."""
        self.dispatcher.stop()
        if self.queue_watcher is not None:
            self.queue_watcher.stop()
        self.recovery.stop()
        self.queue.stop_consumer(timeout=2.0)
        # Whatever this runner still held is re-queued (or failed) now, not after a lease TTL.
        recover(self.store.log, dead_owner=self.worker.owner)
        self.sweeper.stop()
        self.watcher.stop()
        for path in (self.home.endpoint_path, self.home.auth_path):
            path.unlink(missing_ok=True)
        self.store.close()
