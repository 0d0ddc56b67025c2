"""SQLite files shared by every worker: one connection per thread and per process, in WAL mode."""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path


class SharedDatabase:
    def __init__(self, path: str | os.PathLike, schema: str, timeout: float = 5, durable: bool = True):
        self.path = Path(path)
        self._schema, self._timeout, self._durable = schema, timeout, durable
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork or be shared between threads.
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            if not self._durable:  # a power cut may lose the last transactions, never corrupt the file
                connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            connection.executescript(self._schema)
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection
