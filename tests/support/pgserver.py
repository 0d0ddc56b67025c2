"""A real PostgreSQL (Debian's package) in a throwaway cluster on a free loopback port, always stopped.

initdb and postgres refuse to run as root, and the tests run as root in CI: the cluster then belongs to `nobody`.
The server can be killed (SIGKILL to every PostgreSQL process) and started again on the same data directory.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port

UNPRIVILEGED = "nobody"


def postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    assert found, f"{name} is missing: `make test` installs Debian's postgresql package"
    return found


def _as_owner() -> dict:
    """Popen arguments that run a PostgreSQL program as the cluster's owner (nobody when we are root)."""
    if os.geteuid() != 0:
        return {}
    import pwd
    entry = pwd.getpwnam(UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class PostgresServer:
    port: int
    root: Path
    process: subprocess.Popen | None = None
    databases: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "agserve") -> str:
        return f"postgresql://agserve@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.data.mkdir()
        owner = _as_owner()
        if owner:
            for path in (self.root, self.data):
                os.chown(path, owner["user"], owner["group"])
        subprocess.run([postgres_binary("initdb"), "-D", str(self.data), "-U", "agserve", "--auth=trust",
                        "-E", "UTF8", "--no-instructions"], check=True, capture_output=True, cwd=self.root,
                       env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, **owner)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [postgres_binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "log_min_messages=fatal"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root, start_new_session=True,
            env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}, **_as_owner())
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start (exit code {self.process.poll()})")
            time.sleep(0.1)

    def _answers(self) -> bool:
        import psycopg
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str = "agserve") -> str:
        """An empty database; its URL."""
        import psycopg
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, database: str, statement: str, *params) -> list[tuple]:
        import psycopg
        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else []

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend: PostgreSQL gone at once, mid-transaction."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def postgres_server():
    root = Path(tempfile.mkdtemp(prefix="agserve-pg-"))
    server = PostgresServer(free_port(), root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
