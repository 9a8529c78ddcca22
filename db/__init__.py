"""Persistence: Peewee models on SQLite, the event log, the run state machine, migrations."""
