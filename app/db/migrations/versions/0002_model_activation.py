"""Model activation (active version, rollback history, promote/rollback events) and what each replica serves."""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "model_activation",
        sa.Column("name", sa.Text, primary_key=True), sa.Column("active", sa.Text, nullable=False),
        sa.Column("history", sa.Text, nullable=False), sa.Column("activation", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False))
    op.create_table(
        "model_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False), sa.Column("name", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False), sa.Column("version", sa.Text, nullable=False),
        sa.Column("previous", sa.Text), sqlite_autoincrement=True)
    op.create_table(
        "model_serving",
        sa.Column("replica", sa.Text, primary_key=True), sa.Column("worker", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True), sa.Column("version", sa.Text),
        sa.Column("status", sa.Text, nullable=False), sa.Column("error", sa.Text),
        sa.Column("failed_version", sa.Text), sa.Column("reported_at", sa.Float, nullable=False))
