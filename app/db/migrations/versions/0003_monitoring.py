"""Monitoring in the shared database: traffic and drift counts, answered predictions and outcomes (feedback), alert
state and log, and the evaluator (formerly a SQLite file on each machine, so each replica saw only itself)."""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "monitor_traffic",
        sa.Column("bucket", sa.BigInteger, primary_key=True), sa.Column("model", sa.Text, primary_key=True),
        sa.Column("status_class", sa.Text, primary_key=True), sa.Column("latency_bin", sa.Integer, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False))
    op.create_table(
        "monitor_drift",
        sa.Column("model", sa.Text, primary_key=True), sa.Column("version", sa.Text, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True), sa.Column("feature", sa.Text, primary_key=True),
        sa.Column("cell", sa.Text, primary_key=True), sa.Column("count", sa.BigInteger, nullable=False))
    op.create_index("monitor_drift_bucket", "monitor_drift", ["bucket"])
    op.create_table(
        "monitor_predictions",
        sa.Column("request_id", sa.Text, primary_key=True), sa.Column("at", sa.Float, nullable=False),
        sa.Column("model", sa.Text, nullable=False), sa.Column("version", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False), sa.Column("outputs", sa.LargeBinary, nullable=False))
    op.create_index("monitor_predictions_at", "monitor_predictions", ["at"])
    op.create_table(
        "monitor_outcomes",
        sa.Column("prediction_id", sa.Text, primary_key=True), sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("row", sa.Integer, nullable=False), sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False), sa.Column("at", sa.Float, nullable=False),
        sa.Column("actual", sa.LargeBinary, nullable=False))
    op.create_index("monitor_outcomes_model", "monitor_outcomes", ["model", "version", "at"])
    op.create_index("monitor_outcomes_at", "monitor_outcomes", ["at"])
    op.create_table(
        "monitor_alert_state",
        sa.Column("rule", sa.Text, primary_key=True), sa.Column("subject", sa.Text, primary_key=True),
        sa.Column("firing", sa.Boolean, nullable=False), sa.Column("since", sa.Float),
        sa.Column("last_sent", sa.Float), sa.Column("value", sa.Float))
    op.create_table(
        "monitor_alert_log",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False), sa.Column("rule", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False), sa.Column("kind", sa.Text, nullable=False),
        sa.Column("value", sa.Float), sa.Column("message", sa.Text, nullable=False),
        sa.Column("replica", sa.Text, nullable=False), sa.Column("pid", sa.Integer, nullable=False),
        sqlite_autoincrement=True)
    op.create_table(
        "monitor_evaluator",
        sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
        sa.Column("replica", sa.Text, nullable=False), sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False), sa.Column("runs", sa.BigInteger, nullable=False))
