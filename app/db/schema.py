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

# --- monitoring (migration 0003): counts are added into time buckets, so every worker's and replica's sum exactly
monitor_traffic = sa.Table(
    "monitor_traffic", metadata,
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("status_class", sa.Text, primary_key=True),
    sa.Column("latency_bin", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

monitor_drift = sa.Table(
    "monitor_drift", metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("feature", sa.Text, primary_key=True),
    sa.Column("cell", sa.Text, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Index("monitor_drift_bucket", "bucket"),
)

monitor_predictions = sa.Table(  # answered requests' outputs, for feedback to join (any replica's)
    "monitor_predictions", metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("outputs", sa.LargeBinary, nullable=False),
    sa.Index("monitor_predictions_at", "at"),
)

monitor_outcomes = sa.Table(
    "monitor_outcomes", metadata,
    sa.Column("prediction_id", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actual", sa.LargeBinary, nullable=False),
    sa.Index("monitor_outcomes_model", "model", "version", "at"),
    sa.Index("monitor_outcomes_at", "at"),
)

monitor_alert_state = sa.Table(  # one row per (rule, subject) condition: what was announced, and when
    "monitor_alert_state", metadata,
    sa.Column("rule", sa.Text, primary_key=True),
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("firing", sa.Boolean, nullable=False),
    sa.Column("since", sa.Float),
    sa.Column("last_sent", sa.Float),
    sa.Column("value", sa.Float),
)

monitor_alert_log = sa.Table(
    "monitor_alert_log", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)

monitor_evaluator = sa.Table(  # the one evaluator of the fleet, as it last reported
    "monitor_evaluator", metadata,
    sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    sa.Column("replica", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("runs", sa.BigInteger, nullable=False),
)

# --- the default model (migration 0004): shared by the fleet, since the model folder is mounted read-only
default_model = sa.Table(
    "default_model", metadata,
    sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
