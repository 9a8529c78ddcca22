"""Initial schema: runs, events, control requests, questions, confirmations, delegation tokens.

Written as plain DDL (a frozen copy, independent of ``db/models.py``) so the schema a
migration creates never changes when the models evolve; ``tests/test_migrations.py``
checks that the models and the migrated schema agree.
"""

from typing import Any

STATEMENTS = [
    """CREATE TABLE run (
        id TEXT PRIMARY KEY NOT NULL,
        task_id TEXT,
        parent_run_id TEXT REFERENCES run (id),
        state TEXT NOT NULL,
        engine TEXT NOT NULL,
        task TEXT NOT NULL,
        repo TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        state_reason TEXT,
        checkpoint TEXT
    )""",
    "CREATE INDEX run_state ON run (state)",
    "CREATE INDEX run_parent_run_id ON run (parent_run_id)",
    "CREATE INDEX run_created_at ON run (created_at, id)",
    """CREATE TABLE event (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        run_id TEXT NOT NULL REFERENCES run (id),
        seq INTEGER NOT NULL,
        ts TEXT NOT NULL,
        type TEXT NOT NULL,
        actor TEXT NOT NULL,
        payload TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX event_run_id_seq ON event (run_id, seq)",
    """CREATE TABLE control_request (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        run_id TEXT NOT NULL REFERENCES run (id),
        request_id TEXT NOT NULL,
        action TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        reason TEXT,
        requested_at TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX control_request_run_id_request_id ON control_request (run_id, request_id)",
    """CREATE TABLE question (
        id TEXT PRIMARY KEY NOT NULL,
        run_id TEXT NOT NULL REFERENCES run (id),
        parent_run_id TEXT REFERENCES run (id),
        prompt TEXT NOT NULL,
        status TEXT NOT NULL,
        answer TEXT,
        auto_pause INTEGER NOT NULL DEFAULT 0,
        expiry_fallback TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        resolved_at TEXT,
        resolved_by TEXT
    )""",
    "CREATE INDEX question_status ON question (status, expires_at)",
    "CREATE INDEX question_run_id ON question (run_id)",
    """CREATE TABLE confirmation (
        id TEXT PRIMARY KEY NOT NULL,
        run_id TEXT NOT NULL REFERENCES run (id),
        action TEXT NOT NULL,
        params TEXT NOT NULL,
        digest TEXT NOT NULL,
        nonce_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        resolved_at TEXT,
        resolved_by TEXT
    )""",
    "CREATE INDEX confirmation_status ON confirmation (status, expires_at)",
    "CREATE INDEX confirmation_digest ON confirmation (digest)",
    """CREATE TABLE delegation_token (
        id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
        run_id TEXT NOT NULL REFERENCES run (id),
        token_hash TEXT NOT NULL UNIQUE,
        profile TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
]


def up(migrator: Any, db: Any) -> None:
    """Create the initial tables and indexes."""
    for statement in STATEMENTS:
        db.execute_sql(statement)


def down(migrator: Any, db: Any) -> None:
    """Drop every table this migration created."""
    for table in (
        "delegation_token",
        "confirmation",
        "question",
        "control_request",
        "event",
        "run",
    ):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
