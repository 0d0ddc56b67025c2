"""The default model (answered by POST /predict), formerly models/default.json: in a fleet the model folder is
mounted read-only and every replica must follow one record. An existing default.json is adopted on first read."""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "default_model",
        sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False), sa.Column("updated_at", sa.Float, nullable=False))
