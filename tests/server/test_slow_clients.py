"""Slow clients (slowloris) against a real gunicorn with no proxy in front: many connections trickling their headers
never hold a worker thread, so a normal request is still answered at once; each is closed after
AGSERVE_HEADER_TIMEOUT."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import requests

from tests.support.servers import gunicorn

THREADS = 4
SLOW = 3 * THREADS  # three times the threads the worker has


@pytest.mark.server
def test_trickled_headers_hold_no_thread_and_are_cut_off(repository_path):
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS="binary", AGSERVE_THREADS=str(THREADS),
                  AGSERVE_HEADER_TIMEOUT="3") as server:
        port = int(server.base.rsplit(":", 1)[1])
        stop = threading.Event()
        slow = []
        try:
            for _ in range(SLOW):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
                slow.append(sock)
            opened = time.monotonic()

            def trickle():  # one more header line every 0.3 s on every connection, as slowloris does
                while not stop.wait(0.3):
                    for sock in slow:
                        with contextlib.suppress(OSError):
                            sock.sendall(b"X-Slow: 1\r\n")

            trickler = threading.Thread(target=trickle, daemon=True)
            trickler.start()
            time.sleep(1)
            for _ in range(3):
                started = time.monotonic()
                answer = requests.get(f"{server.base}/health/live", timeout=10)
                assert answer.status_code == 200 and time.monotonic() - started < 1.0
            # Each slow connection is closed once its headers are 3 s late (a header timeout, not per byte).
            closed = [_closed_within(sock, opened + 3 + 3) for sock in slow]
            assert all(closed) and time.monotonic() - opened > 2.5
        finally:
            stop.set()
            for sock in slow:
                sock.close()


def _closed_within(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes the connection before the deadline (what it may send first is drained)."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except socket.timeout:
            return False
        except OSError:  # reset: closed as well
            return True
    return False
