"""Migrations through peewee's runner: idempotent, listed, concurrent-safe, matching the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.home import Home
from db.connection import open_database
from db.migrate import MIGRATIONS_DIR, migrate, pending, status
from db.models import ALL_MODELS, database_proxy
from tests.conftest import subprocess_env


def test_migrate_is_idempotent_and_status_lists_every_file(tmp_path: Path) -> None:
    db = open_database(tmp_path / "app.db")
    names = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert pending(db) == names
    assert migrate(db) == names
    assert migrate(db) == []
    rows = status(db)
    assert [row.name for row in rows] == names
    assert all(row.applied_at and row.file_present for row in rows)


def test_models_match_the_migrated_schema(tmp_path: Path) -> None:
    db = open_database(tmp_path / "app.db")
    migrate(db)
    database_proxy.initialize(db)
    for model in ALL_MODELS:
        table = model._meta.table_name
        columns = {row[1]: row for row in db.execute_sql(f"PRAGMA table_info({table})").fetchall()}
        fields = {field.column_name: field for field in model._meta.sorted_fields}
        assert set(columns) == set(fields), f"{table}: schema and model disagree"
        for name, field in fields.items():
            not_null = bool(columns[name][3]) or bool(columns[name][5])
            assert not_null == (not field.null), f"{table}.{name} nullability"


def test_pragmas(tmp_path: Path) -> None:
    normal = open_database(tmp_path / "a.db")
    assert normal.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert normal.execute_sql("PRAGMA synchronous").fetchone()[0] == 1
    assert normal.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert normal.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 5000
    full = open_database(tmp_path / "b.db", synchronous="FULL", busy_timeout_ms=1234)
    assert full.execute_sql("PRAGMA synchronous").fetchone()[0] == 2
    assert full.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 1234


def test_concurrent_first_starts_apply_each_migration_once(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    code = (
        "import sys; from app.home import Home; from db.store import open_store;"
        "open_store(Home(__import__('pathlib').Path(sys.argv[1]))).close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(home.root)], env=subprocess_env())
        for _ in range(4)
    ]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0, 0]
    db = open_database(home.db_path)
    history = db.execute_sql("SELECT name FROM schema_migration").fetchall()
    assert len(history) == len(list(MIGRATIONS_DIR.glob("[0-9]*.py")))
