"""Opening the SQLite database with the pragmas every connection needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from peewee import SqliteDatabase

Synchronous = Literal["NORMAL", "FULL"]


def open_database(
    path: Path,
    *,
    synchronous: Synchronous = "NORMAL",
    busy_timeout_ms: int = 5000,
) -> SqliteDatabase:
    """Return a Peewee database for ``path`` in WAL mode.

    Every transaction starts with ``BEGIN IMMEDIATE`` so that a writer takes the write lock
    up front: the event log's read-then-increment of ``run.last_seq`` is then serialised
    across threads and processes, and no transaction fails late with ``SQLITE_BUSY`` on
    lock upgrade. ``synchronous=NORMAL`` is durable against process crashes in WAL mode;
    ``FULL`` (config ``db.synchronous``) also survives power loss at a cost per commit.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"db.synchronous must be NORMAL or FULL, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteDatabase(
        str(path),
        pragmas=[
            ("journal_mode", "wal"),
            ("synchronous", synchronous),
            ("foreign_keys", 1),
            ("busy_timeout", int(busy_timeout_ms)),
        ],
        timeout=busy_timeout_ms / 1000,
        lock_type="IMMEDIATE",
        check_same_thread=False,
    )


def raw_connection(db: SqliteDatabase) -> sqlite3.Connection:
    """The calling thread's sqlite3 connection (opened on demand), for the hot SQL paths."""
    connection: sqlite3.Connection = db.connection()  # type: ignore[no-untyped-call]
    return connection
