"""Per-run control state: a control sequence number and feature toggles (control.json)."""

from typing import Any

from peewee import SQL, IntegerField, TextField


def up(migrator: Any, db: Any) -> None:
    """Add ``run.control_seq`` and ``run.feature_toggles``."""
    migrator.migrate(
        migrator.add_column(
            "run", "control_seq", IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
        ),
        migrator.add_column(
            "run", "feature_toggles", TextField(default="{}", constraints=[SQL("DEFAULT '{}'")])
        ),
    )


def down(migrator: Any, db: Any) -> None:
    """Remove the control state columns."""
    migrator.migrate(
        migrator.drop_column("run", "feature_toggles"),
        migrator.drop_column("run", "control_seq"),
    )
