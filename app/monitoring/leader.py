"""Which one process evaluates alerts and prunes the monitoring tables: a lock that its holder loses when it dies.

With PostgreSQL (a fleet) it is a session advisory lock held on a connection of its own, so exactly one worker of the
whole fleet holds it, and PostgreSQL releases it when that worker's connection ends (killed, partitioned away:
keepalives notice within ~30 s). With the embedded SQLite file (one machine) it is an exclusive file lock beside the
file, released by the kernel when the holder dies.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import sqlalchemy as sa

from app.db import Database, DatabaseUnavailable

log = logging.getLogger("agserve.alerts")
EVALUATOR_LOCK = 0x61676576  # PostgreSQL advisory lock id of the fleet's one evaluator ("agev")


class FileLeader:
    """Holds `path` exclusively while this process lives; try_lead() is cheap to call again and again."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._pid = 0

    def try_lead(self) -> bool:
        if self._fd is not None and self._pid == os.getpid():
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd, self._pid = fd, os.getpid()
        log.info("this worker leads: it evaluates the alert rules and prunes the monitoring store")
        return True


class AdvisoryLockLeader:
    """Holds a PostgreSQL session advisory lock on a dedicated connection; try_lead() checks the connection still
    lives before saying yes, and bids again on the same connection while another process leads."""

    def __init__(self, database: Database, key: int = EVALUATOR_LOCK):
        self.database, self.key = database, key
        self._connection: sa.Connection | None = None
        self._pid = 0
        self.leading = False

    def try_lead(self) -> bool:
        try:
            if self._connection is None or self._pid != os.getpid():  # never a connection inherited over a fork
                self._connection, self._pid, self.leading = self.database.dedicated_connection(), os.getpid(), False
            if self.leading:
                self._connection.exec_driver_sql("SELECT 1")  # the session, and so the lock, is still ours
                return True
            self.leading = bool(self._connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                                         {"key": self.key}).scalar())
        except (DatabaseUnavailable, sa.exc.DBAPIError) as exc:
            if self.leading:
                log.warning("lost the lead (its database connection failed): %s", exc)
            self._drop()
            return False
        if self.leading:
            log.info("this worker leads the fleet: it evaluates the alert rules and prunes the monitoring tables")
        return self.leading

    def _drop(self) -> None:
        connection, self._connection, self.leading = self._connection, None, False
        if connection is not None:
            try:
                connection.close()
            except sa.exc.DBAPIError:  # already broken: nothing to close
                pass


def leader_for(database: Database):
    """The evaluator lock for this database: PostgreSQL's advisory lock, or a file lock beside the SQLite file."""
    if database.dialect == "postgresql":
        return AdvisoryLockLeader(database)
    return FileLeader(f"{sa.make_url(database.url).database}.leader.lock")
