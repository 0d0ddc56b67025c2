"""Starting a real gunicorn on a free loopback port, and always stopping it."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGSERVE_")}
    env.update({"AGSERVE_ENV": "testing", **settings})
    return env


def wait_until(url: str, timeout: float, process: subprocess.Popen | None = None, status: int = 200) -> requests.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            last = requests.get(url, timeout=2)
            if last.status_code == status:
                return last
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last and last.status_code})")


def eventually(condition, timeout: float = 20.0, step: float = 0.05) -> bool:
    """Whether condition() becomes true within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


@dataclass
class Server:
    base: str
    process: subprocess.Popen
    key: str  # an API key with every scope
    auth_db: Path

    def worker_pids(self) -> list[int]:
        import psutil
        return sorted(child.pid for child in psutil.Process(self.process.pid).children())

    @contextlib.contextmanager
    def only_worker(self, pid: int):
        """Pause every other worker (SIGSTOP) so that new connections can only reach pid."""
        others = [p for p in self.worker_pids() if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)

    def session(self) -> requests.Session:
        """A requests session that sends the all-scopes key."""
        session = requests.Session()
        session.headers["X-API-Key"] = self.key
        return session


@contextlib.contextmanager
def gunicorn(repository: Path, workers: int = 2, ready_timeout: float = 90, wait_ready: bool = True,
             log_path: Path | None = None, auth_db: Path | None = None, **settings: str):
    """Yield a Server running gunicorn -c gunicorn.conf.py wsgi:app; stop it afterwards."""
    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    port = free_port()
    own_folder = None if auth_db else tempfile.TemporaryDirectory(prefix="agserve-auth-")  # removed when stopped
    auth_db = auth_db or Path(own_folder.name) / "auth.sqlite3"
    key, _ = KeyStore(sqlite_file(auth_db)).create("tests", ["predict", "explain", "model_info", "admin", "metrics"])
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_BIND=f"127.0.0.1:{port}",
                     AGSERVE_AUTH_DB=str(auth_db), WEB_CONCURRENCY=str(workers), **settings)
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    server = Server(base, process, key, auth_db)
    try:
        if wait_ready:
            wait_until(f"{base}/health/ready", ready_timeout, process)
            wait_for_every_worker(server, workers, ready_timeout)
        yield server
    finally:
        stop(process)
        if log_path:
            log.close()
        if own_folder:
            own_folder.cleanup()


def answer_on(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one keep-alive request; return the answer's headers and body, read whole."""
    sock.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def wait_for_every_worker(server: "Server", workers: int, timeout: float) -> None:
    """One ready answer proves one worker; ask each worker in turn, so tests never meet one still booting."""
    import psutil

    deadline = time.monotonic() + timeout
    while len(server.worker_pids()) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(server.worker_pids())} of {workers} workers started")
        time.sleep(0.1)
    for pid in server.worker_pids():
        with server.only_worker(pid):
            answer = wait_until(f"{server.base}/health/ready", max(1.0, deadline - time.monotonic()), server.process)
            assert answer.json()["worker"]["pid"] == pid or not psutil.pid_exists(pid)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
