"""Slow clients (slowloris, slow POST) against a real gunicorn with no proxy in front: many connections trickling
their headers (new connections, or kept-alive ones after an answer), or the body of a request, never hold a worker
thread, so a normal request is still answered at once; each is answered 408 and closed after AGSERVE_HEADER_TIMEOUT
or AGSERVE_BODY_TIMEOUT. A body larger than what is gathered without a thread holds one only until it falls behind
AGSERVE_BODY_MIN_RATE."""
from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time

import pytest
import requests

from tests.support.data import FEATURES, to_records
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
            for i in range(SLOW):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:  # a kept-alive client starting its next request at once: its thread waits for it
                    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    assert _answer_before_close(sock, time.monotonic() + 5)[0] == 200
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


BODY_TIMEOUT = 2.0


@pytest.mark.server
def test_trickled_bodies_hold_no_thread_and_are_cut_off(repository_path, dataset, tmp_path):
    row = to_records(dataset[1][FEATURES].dropna().head(1))[0]
    body = json.dumps({"data": [row]}).encode()
    log = tmp_path / "server.log"
    with gunicorn(repository_path, workers=1, log_path=log, AGSERVE_LOG_LEVEL="info", AGSERVE_MODELS="binary",
                  AGSERVE_THREADS=str(THREADS), AGSERVE_BODY_TIMEOUT=str(BODY_TIMEOUT), AGSERVE_BODY_MIN_RATE="1048576") as server:
        port = int(server.base.rsplit(":", 1)[1])
        http = server.session()
        stop = threading.Event()
        slow = []
        try:
            for _ in range(SLOW):  # complete headers, then the body one byte at a time
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(_post_headers(server.key, len(body)) + body[:1])
                slow.append(sock)
            opened = time.monotonic()

            def trickle():
                sent = 1
                while not stop.wait(0.3) and sent < len(body) - 1:
                    for sock in slow:
                        with contextlib.suppress(OSError):
                            sock.sendall(body[sent:sent + 1])
                    sent += 1

            trickler = threading.Thread(target=trickle, daemon=True)
            trickler.start()
            time.sleep(0.5)
            for _ in range(3):
                started = time.monotonic()
                assert requests.get(f"{server.base}/health/live", timeout=10).status_code == 200
                answer = http.post(f"{server.base}/predict", json={"data": [row]}, timeout=10)
                assert answer.status_code == 200 and time.monotonic() - started < 1.5, answer.text
            # Each is answered 408 in the JSON shape and closed once its body is BODY_TIMEOUT late, not later.
            answers = [_answer_within(sock, opened + BODY_TIMEOUT + 2) for sock in slow]
            assert all(a is not None and a[0] == 408 for a in answers), answers
            assert all(set(a[1]) == {"error", "details", "request_id"} for a in answers)
            assert time.monotonic() - opened > BODY_TIMEOUT - 0.5
        finally:
            stop.set()
            for sock in slow:
                sock.close()

        # A body past what is gathered without a thread: sent fast up to there, then trickled. Each holds a thread
        # only until it falls behind the minimum rate, then the view answers 408 with its request id.
        large = 200_000
        slow = []
        try:
            for _ in range(THREADS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(_post_headers(server.key, large) + b"[" * 100_000)
                slow.append(sock)
            opened = time.monotonic()
            answers = [_answer_within(sock, opened + BODY_TIMEOUT + 2) for sock in slow]
            assert all(a is not None and a[0] == 408 and a[1]["request_id"] for a in answers), answers
            started = time.monotonic()
            assert requests.get(f"{server.base}/health/live", timeout=10).status_code == 200
            assert time.monotonic() - started < 1.0
        finally:
            for sock in slow:
                sock.close()
        # A body declared past the limit is refused 413 at once, without waiting for bytes that never come.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_post_headers(server.key, 33 * 2 ** 20))
            refused = _answer_before_close(sock, time.monotonic() + 1.5)  # gunicorn closes the connection later
        assert refused is not None and refused[0] == 413 and refused[1]["details"]["max_bytes"] == 32 * 2 ** 20, refused
        metrics = http.get(f"{server.base}/metrics", timeout=10).text
        assert 'agserve_slow_clients_total{part="body"} %.1f' % (SLOW + THREADS) in metrics
    logged = log.read_text()  # once the server has stopped, so every worker's lines are flushed
    assert all(f'"request_id": "{a[1]["request_id"]}"' in logged for a in answers)
    assert logged.count("its request body was 2 s late") == SLOW and "Traceback" not in logged


def _post_headers(key: str, length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _answer_before_close(sock: socket.socket, deadline: float) -> tuple[int, dict] | None:
    """(status, JSON body) of an answer read by its Content-Length, before the deadline, the connection still open."""
    received = b""
    while time.monotonic() < deadline:
        head, _, text = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length and len(text) >= int(length.group(1)):
            return int(head.split()[1]), json.loads(text)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        received += chunk
    return None


def _answer_within(sock: socket.socket, deadline: float) -> tuple[int, dict] | None:
    """(status, JSON body) of what the server answers and then closes the connection with, before the deadline."""
    received = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    else:
        return None
    head, _, text = received.partition(b"\r\n\r\n")
    if not head:
        return None
    return int(head.split()[1]), json.loads(text)


def test_a_body_keeping_up_the_minimum_rate_is_read_past_the_timeout_and_one_falling_behind_is_not():
    from app.workers import BodyClock

    ours, theirs = socket.socketpair()
    clock = BodyClock(ours, time.monotonic(), timeout=0.3, min_rate=2000, received=0)
    try:
        for _ in range(10):  # 5,000 bytes/s for a second: past the timeout, above the rate
            theirs.sendall(b"x" * 500)
            assert clock.recv(4096) == b"x" * 500
            time.sleep(0.1)
        assert time.monotonic() - clock.started > 0.9
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # then nothing: cut off once the average falls below 2,000 bytes/s
            clock.recv(4096)
        assert time.monotonic() - started < 2.6 and clock.expired
    finally:
        ours.close()
        theirs.close()


def test_gunicorns_tighter_drain_timeout_is_kept():
    """gunicorn drains an unread body under its own socket timeout; the body clock never waits longer than that."""
    from app.workers import BodyClock

    ours, theirs = socket.socketpair()
    clock = BodyClock(ours, time.monotonic(), timeout=30, min_rate=2000, received=0)
    try:
        ours.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            clock.recv(4096)
        assert time.monotonic() - started < 1 and not clock.expired and ours.gettimeout() == 0.2
    finally:
        ours.close()
        theirs.close()
