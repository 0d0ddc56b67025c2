"""The tables, as SQLAlchemy Core sees them (migrations/ creates them; keep the two in step)."""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)

audit = sa.Table(
    "audit", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("detail", sa.Text),
    sqlite_autoincrement=True,
)

model_activation = sa.Table(
    "model_activation", metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("active", sa.Text, nullable=False),
    sa.Column("history", sa.Text, nullable=False),  # JSON list of earlier active versions, newest last (rollback)
    sa.Column("activation", sa.Text, nullable=False),  # new on every promote/rollback: cache keys change with it
    sa.Column("updated_at", sa.Float, nullable=False),
)

model_events = sa.Table(
    "model_events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("previous", sa.Text),
    sqlite_autoincrement=True,
)

model_serving = sa.Table(
    "model_serving", metadata,
    sa.Column("replica", sa.Text, primary_key=True),
    sa.Column("worker", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("failed_version", sa.Text),
    sa.Column("reported_at", sa.Float, nullable=False),
)
