"""Alembic's entry point: app.db.migrate() hands over a connection that already holds the migration lock."""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
