"""Execution state of a run: its lease, attempts, active time and its engine's process group."""

from typing import Any

from peewee import SQL, IntegerField, TextField


def up(migrator: Any, db: Any) -> None:
    """Add the lease and execution columns to ``run``."""
    migrator.migrate(
        migrator.add_column("run", "lease_owner", TextField(null=True)),
        migrator.add_column("run", "lease_expires_at", TextField(null=True)),
        migrator.add_column(
            "run", "attempt", IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
        ),
        migrator.add_column(
            "run", "active_ms", IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
        ),
        migrator.add_column("run", "engine_pgid", IntegerField(null=True)),
    )
    db.execute_sql("CREATE INDEX run_lease ON run (state, lease_expires_at)")


def down(migrator: Any, db: Any) -> None:
    """Remove the execution columns."""
    db.execute_sql("DROP INDEX IF EXISTS run_lease")
    migrator.migrate(
        *(
            migrator.drop_column("run", column)
            for column in ("engine_pgid", "active_ms", "attempt", "lease_expires_at", "lease_owner")
        )
    )
