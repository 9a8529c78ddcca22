"""Schema migrations through peewee's own runner (``playhouse.migrations``).

Migration files live in the top-level ``migrations/`` package. Concurrent starters (two
processes opening a fresh home at once) are serialised with an exclusive ``flock`` on a
lock file beside the database, so each migration is applied exactly once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peewee import SqliteDatabase
from playhouse.migrations import Runner

import migrations as migrations_package

MIGRATIONS_DIR = Path(migrations_package.__file__).parent
HISTORY_TABLE = "schema_migration"


@dataclass(frozen=True)
class MigrationStatus:
    """One migration: its name and when it was applied (None while pending)."""

    name: str
    applied_at: str | None
    file_present: bool


def _runner(db: SqliteDatabase) -> Runner:
    return Runner(db, directory=str(MIGRATIONS_DIR), table_name=HISTORY_TABLE)


@contextmanager
def _migration_lock(db: SqliteDatabase) -> Iterator[None]:
    lock_path = Path(db.database).with_name(Path(db.database).name + ".migrate.lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(db: SqliteDatabase) -> list[str]:
    """Apply every pending migration in order; return the names applied (idempotent)."""
    with _migration_lock(db):
        applied: list[str] = _runner(db).up()
    return applied


def status(db: SqliteDatabase) -> list[MigrationStatus]:
    """List every migration known from files or history, in order."""
    rows = _runner(db).status()
    return [
        MigrationStatus(
            name=row.name,
            applied_at=row.applied.isoformat(timespec="seconds") if row.applied else None,
            file_present=row.path is not None,
        )
        for row in rows
    ]


def pending(db: SqliteDatabase) -> list[str]:
    """Names of migrations not applied yet."""
    return [row.name for row in status(db) if row.applied_at is None and row.file_present]
