"""API keys and the audit log (the tables the SQLite-only server created itself: adopted as they are)."""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "api_keys" not in existing:
        op.create_table(
            "api_keys",
            sa.Column("id", sa.Text, primary_key=True), sa.Column("hash", sa.Text, nullable=False),
            sa.Column("owner", sa.Text, nullable=False), sa.Column("scopes", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False), sa.Column("expires_at", sa.Float),
            sa.Column("last_used_at", sa.Float), sa.Column("revoked_at", sa.Float))
    if "audit" not in existing:
        op.create_table(
            "audit",
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("at", sa.Float, nullable=False), sa.Column("actor", sa.Text, nullable=False),
            sa.Column("action", sa.Text, nullable=False), sa.Column("target", sa.Text),
            sa.Column("source", sa.Text), sa.Column("detail", sa.Text), sqlite_autoincrement=True)
