"""Peewee models of the control plane's tables (the schema itself is made by ``migrations/``).

Timestamps are stored as UTC RFC 3339 text (``app.clock.format_ts``) so they sort as text
and equal what the API and the event envelope show.
"""

from __future__ import annotations

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DatabaseProxy,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

database_proxy = DatabaseProxy()


class BaseModel(Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Run(BaseModel):
    id = CharField(primary_key=True)
    task_id = CharField(null=True)
    parent_run = ForeignKeyField("self", null=True, column_name="parent_run_id", backref="children")
    state = CharField()
    engine = CharField()
    task = TextField()
    repo = TextField(null=True)
    created_at = CharField()
    updated_at = CharField()
    #: The seq of the run's newest event; the event log increments it inside the write lock.
    last_seq = IntegerField(default=0)
    state_reason = TextField(null=True)
    checkpoint = TextField(null=True)
    #: Number of control requests recorded for the run (control.json's ``control_seq``).
    control_seq = IntegerField(default=0)
    #: JSON object of per-run feature toggles, applied at resume boundaries.
    feature_toggles = TextField(default="{}")
    #: ``host:pid:nonce`` of the worker holding the run, and until when (renewed while it runs).
    lease_owner = TextField(null=True)
    lease_expires_at = CharField(null=True)
    #: How many times a worker has started (or continued) the run.
    attempt = IntegerField(default=0)
    #: Milliseconds spent running, over all attempts (the wall-clock budget counts these).
    active_ms = IntegerField(default=0)
    #: Process group of the engine's child process, while it has one.
    engine_pgid = IntegerField(null=True)


class Event(BaseModel):
    #: Global cursor: increases in commit order across all runs (AUTOINCREMENT, never reused).
    id = AutoField()
    run = ForeignKeyField(Run, column_name="run_id", backref="events")
    seq = IntegerField()
    ts = CharField()
    type = CharField()
    actor = CharField()
    payload = TextField()


class ControlRequest(BaseModel):
    id = AutoField()
    run = ForeignKeyField(Run, column_name="run_id", backref="control_requests")
    request_id = CharField()
    action = CharField()
    requested_by = CharField()
    reason = TextField(null=True)
    requested_at = CharField()


class Question(BaseModel):
    id = CharField(primary_key=True)
    run = ForeignKeyField(Run, column_name="run_id", backref="questions")
    parent_run = ForeignKeyField(Run, null=True, column_name="parent_run_id")
    prompt = TextField()
    status = CharField()
    answer = TextField(null=True)
    auto_pause = BooleanField(default=False)
    expiry_fallback = CharField()
    created_at = CharField()
    expires_at = CharField(null=True)
    resolved_at = CharField(null=True)
    resolved_by = CharField(null=True)


class Confirmation(BaseModel):
    id = CharField(primary_key=True)
    run = ForeignKeyField(Run, column_name="run_id", backref="confirmations")
    action = CharField()
    params = TextField()
    digest = CharField()
    nonce_hash = CharField()
    status = CharField()
    created_at = CharField()
    expires_at = CharField()
    resolved_at = CharField(null=True)
    resolved_by = CharField(null=True)


class DelegationToken(BaseModel):
    id = AutoField()
    run = ForeignKeyField(Run, column_name="run_id", backref="delegation_tokens")
    token_hash = CharField(unique=True)
    profile = CharField()
    created_at = CharField()
    revoked_at = CharField(null=True)


ALL_MODELS: list[type[BaseModel]] = [
    Run,
    Event,
    ControlRequest,
    Question,
    Confirmation,
    DelegationToken,
]
