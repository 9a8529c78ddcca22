"""Opening a home's database: connect, migrate, bind the models, build the event log."""

from __future__ import annotations

from dataclasses import dataclass

from peewee import SqliteDatabase

from app.home import Home
from db.connection import Synchronous, open_database
from db.eventlog import EventLog
from db.migrate import migrate
from db.models import database_proxy


@dataclass
class Store:
    """The database and event log of one home."""

    home: Home
    db: SqliteDatabase
    log: EventLog

    def close(self) -> None:
        """Close the event log's resources and the calling thread's connection."""
        self.log.close()
        if not self.db.is_closed():
            self.db.close()


def open_store(
    home: Home,
    *,
    synchronous: Synchronous = "NORMAL",
    busy_timeout_ms: int = 5000,
    auto_migrate: bool = True,
) -> Store:
    """Open (creating if needed) the home's database, apply migrations, bind the models."""
    home.ensure()
    db = open_database(home.db_path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
    if auto_migrate:
        migrate(db)
    database_proxy.initialize(db)
    return Store(home=home, db=db, log=EventLog(db, home))
