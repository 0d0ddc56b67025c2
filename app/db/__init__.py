"""The database: the one source of truth for what must survive a restart of anything (API keys, revocations, the
audit log, which version of each model is active, which replica serves what).

SQLAlchemy Core rather than two drivers: one set of statements runs on the embedded SQLite file (one machine, the
default: `make run` needs nothing) and on PostgreSQL (AGSERVE_DATABASE_URL, a fleet of replicas), and Alembic
migrates both from the same scripts. Core, not the ORM: the queries are few and plain, and stay visible.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.pool import NullPool

log = logging.getLogger("agserve.db")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SCHEMA_REVISION = "0004"  # the newest migration; a worker finding it in place starts without importing Alembic
MIGRATION_LOCK = 0x61677365  # PostgreSQL advisory lock id held while one replica migrates ("agse")
MIGRATION_TIMEOUT_MS = 120_000  # a replica waiting for another one's migration waits this long, not the statement timeout


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time (HTTP 503)."""


def database_url(settings: Mapping[str, Any]) -> str:
    """AGSERVE_DATABASE_URL, or the embedded SQLite file at AGSERVE_AUTH_DB."""
    url = settings["DATABASE_URL"]
    if not url:
        return f"sqlite:///{Path(settings['AUTH_DB']).resolve()}"
    if url.startswith(("postgres://", "postgresql://")):  # the usual spelling; psycopg 3 is the driver we ship
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """One engine (connection pool) per process, made after the fork; every statement has a timeout."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self._engine: sa.Engine | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._reading = threading.local()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "Database":
        return cls(database_url(settings), settings["DATABASE_TIMEOUT"])

    @property
    def dialect(self) -> str:
        return sa.make_url(self.url).get_backend_name()

    @property
    def engine(self) -> sa.Engine:
        with self._lock:
            if self._engine is None or self._pid != os.getpid():  # a pool's sockets must never cross a fork
                self._engine, self._pid = self._create_engine(), os.getpid()
            return self._engine

    def _create_engine(self) -> sa.Engine:
        if self.dialect == "sqlite":
            path = sa.make_url(self.url).database
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Connections to a file are cheap: enough for every request thread, and never a long wait for one.
            engine = sa.create_engine(self.url, connect_args={"timeout": self.timeout}, pool_size=8, max_overflow=40,
                                      pool_timeout=self.timeout)

            @event.listens_for(engine, "connect")
            def _sqlite_connect(connection, _record):
                connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's guesswork
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")

            @event.listens_for(engine, "begin")
            def _sqlite_begin(connection):
                # Take the write lock up front: a read that later writes would otherwise fail at once when another
                # worker writes (SQLite's busy handler does not cover a lock upgrade).
                # A pure read takes no lock at all: in WAL mode readers never wait for the writer.
                connection.exec_driver_sql("BEGIN" if getattr(self._reading, "on", False) else "BEGIN IMMEDIATE")
            return engine
        return sa.create_engine(self.url, pool_size=4, max_overflow=8, pool_timeout=self.timeout, pool_pre_ping=True,
                                pool_recycle=600, connect_args=self._postgres_connect_args())

    def _postgres_connect_args(self, options: str = "") -> dict[str, Any]:
        milliseconds = int(self.timeout * 1000)
        return {"connect_timeout": max(2, int(self.timeout)),
                "options": f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds} {options}".strip()}

    def dedicated_connection(self) -> sa.Connection:
        """A PostgreSQL connection of its own, outside the pool and in autocommit, for holding a session advisory
        lock: the lock goes with the session, so it is released when this process dies or loses the connection."""
        # Keepalives both ways: a holder that vanished without closing its socket frees the lock within ~30 s.
        args = self._postgres_connect_args("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                                           "-c tcp_keepalives_count=3")
        engine = sa.create_engine(self.url, poolclass=NullPool,
                                  connect_args={**args, "keepalives": 1, "keepalives_idle": 10,
                                                "keepalives_interval": 5, "keepalives_count": 3})
        try:
            return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise DatabaseUnavailable(_one_line(error)) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A connection in a transaction, committed on success; DatabaseUnavailable when the database is not there."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            raise DatabaseUnavailable(_one_line(error)) from None

    @contextlib.contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A transaction that only reads: on SQLite it neither takes nor waits for the write lock."""
        self._reading.on = True
        try:
            with self.transaction() as connection:
                yield connection
        finally:
            self._reading.on = False

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


def migrate(database: Database, revision: str = "head") -> None:
    """Bring the schema to revision, once: processes starting together wait for whichever migrates first
    (a PostgreSQL advisory lock; SQLite's write lock) and then find nothing left to do."""
    if revision in ("head", SCHEMA_REVISION) and current_revision(database) == SCHEMA_REVISION:
        return  # the usual case: nothing to do, and no migration lock to wait for
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    started = time.monotonic()
    with _migration_lock(database) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    log.info("schema migrated", extra={"revision": revision, "seconds": round(time.monotonic() - started, 3)})


def current_revision(database: Database) -> str | None:
    """The schema's Alembic revision; None for an empty database (or one from before migrations). A read: on SQLite
    it does not wait for another process's write lock (a worker booting beside a peer stalled in a write failed)."""
    with database.reading() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


@contextlib.contextmanager
def _migration_lock(database: Database) -> Iterator[sa.Connection]:
    if database.dialect == "postgresql":
        with database.transaction() as connection:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {MIGRATION_TIMEOUT_MS}")
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {MIGRATION_TIMEOUT_MS}")
            # Held until this transaction commits: DDL and the version row become visible together.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
            yield connection
        return
    # SQLite: the transaction begins IMMEDIATE, so it holds the file's write lock from its first statement on.
    with database.transaction() as connection:
        yield connection


def open_database(settings: Mapping[str, Any]) -> Database:
    """The database these settings name, migrated to the current schema."""
    database = Database.from_settings(settings)
    migrate(database)
    return database


def sqlite_file(path: str | os.PathLike, timeout: float = 5.0) -> Database:
    """The embedded SQLite database at path, migrated (tools and tests that only have the file's path)."""
    return open_database({"DATABASE_URL": "", "AUTH_DB": str(path), "DATABASE_TIMEOUT": timeout})
