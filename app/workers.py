"""The gunicorn worker: gthread, except that a request's headers and the start of its body are gathered without
holding a thread, and a body that arrives too slowly is cut off.

Stock gthread hands a connection to a thread as soon as its first byte arrives, and the thread then blocks until the
headers are complete and again while the view reads the body: a few dozen clients trickling a header line or a body
byte every few seconds (slowloris, slow POST) hold every thread of every worker, and nothing else is answered.

Here a thread only takes what has arrived (a non-blocking read) and gives the connection back to the worker's poller
until the headers are complete and the body is in (or its first BODY_AHEAD bytes, for a larger body of known
length); until then a connection costs a file descriptor and its bytes, never a thread. Headers later than
AGSERVE_HEADER_TIMEOUT are answered 408 and closed. The body's clock starts when the headers are complete: it has
AGSERVE_BODY_TIMEOUT seconds, and past them it must have kept up AGSERVE_BODY_MIN_RATE bytes/s on average since;
a body that falls behind is answered 408 (in the poller, or, once a thread reads it, by the view: the read raises
TimeoutError). A thread is therefore held by a slow body for at most max(BODY_TIMEOUT, MAX_BODY_BYTES / MIN_RATE),
and only by a client that actually sends BODY_AHEAD bytes first. Connections that send nothing are closed after
gunicorn's keep-alive time, and at most worker_connections are open per worker (more wait in the listen backlog).

An answer's status line, headers and body leave in one TCP segment (CorkedBody): gunicorn writes the headers and
the body with two sends, and each woke the client.

Requests go to the thread that went idle last (WarmestFirstPool): gunicorn's ThreadPoolExecutor wakes its idle
threads in turn, and a model call on a thread that has not run for a while is slower (cold caches, another core).

Connections are closed by age (AGSERVE_MAX_CONNECTION_AGE) and a worker accepts no more than its share of them
(ConnectionShares): a kept-alive connection stays with the worker that accepted it, so after a recycle one worker
served every client while the other idled.
"""
from __future__ import annotations

import json
import mmap
import random
import re
import select
import socket
import threading
import time
from collections import deque
from concurrent import futures

from gunicorn import glogging, util
from gunicorn.workers import gthread

HEADERS_END = b"\r\n\r\n"
NEXT_REQUEST_WAIT = 0.002  # seconds a thread waits on its kept-alive connection before giving it back to the poller
BOOT_RETRY_SECONDS = 5.0  # a worker that could not reach the database waits before exiting: a boot is ~1.5 s of CPU
BODY_AHEAD = 64 * 1024  # bytes of a body gathered before a thread takes it: most prediction bodies whole
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,12})[ \t]*\r\n", re.IGNORECASE)
_NOT_AHEAD = re.compile(rb"\r\n(transfer-encoding|expect):", re.IGNORECASE)  # chunked; a client awaiting 100


def _answer(message: str, status: int = 408, reason: str = "Request Timeout") -> bytes:
    """A whole HTTP answer in the house JSON shape, written before (or instead of) Flask."""
    body = json.dumps({"error": message, "details": {}, "request_id": None}).encode() + b"\n"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, reason.encode("latin-1"), len(body), body))


HEADERS_LATE = _answer("the request headers did not arrive in time")
BODY_LATE = _answer("the request body did not arrive in time")


def _write_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's answer to a request it cannot parse (a control character in a header, a line past its limit...):
    the house JSON shape instead of its HTML page; gunicorn still chooses the status, logs it and closes."""
    util.write_nonblock(sock, _answer(f"{reason}: {message}"[:300] if message else reason, status, reason))


util.write_error = _write_error  # gunicorn's Worker.handle_error answers through this module function


class BodyClock:
    """The connection's socket as gunicorn's parser reads it, with the body's deadline: each recv waits only until
    then, and raises TimeoutError past it; each byte received moves the deadline on by 1/min_rate seconds."""

    def __init__(self, sock: socket.socket, started: float, timeout: float, min_rate: float, received: int):
        self.sock, self.started, self.timeout, self.min_rate = sock, started, timeout, min_rate
        self.received, self.expired = received, False

    def deadline(self) -> float:
        return self.started + max(self.timeout, self.received / self.min_rate)

    def recv(self, size: int) -> bytes:
        remaining = self.deadline() - time.monotonic()
        self.expired = remaining <= 0
        if self.expired:
            raise TimeoutError("the request body did not arrive in time")
        outer = self.sock.gettimeout()  # gunicorn's own bound while it drains an unread body, when tighter
        self.sock.settimeout(remaining if outer is None else min(remaining, outer))
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            self.expired = outer is None or remaining <= outer
            raise TimeoutError("the request body did not arrive in time") from None
        finally:
            self.sock.settimeout(outer)
        self.received += len(data)
        return data

    def __getattr__(self, name: str):  # anything else (fileno, close, send...) is the socket's own
        return getattr(self.sock, name)


class Logger(glogging.Logger):
    """gunicorn's logger without its access log: agserve writes its own line per request (app/api/hooks.py), and
    gunicorn's, sent to a WARNING-level logger, was built field by field for every request and then dropped."""

    def access(self, resp, req, environ, request_time) -> None:
        pass


class CorkedBody:
    """An answer's body whose socket is corked until gunicorn closes it, so the status line, headers and body leave
    in one TCP segment instead of two (one send to wake the client instead of two: ~0.1 ms a request on loopback).
    Corked only once the app has returned: a 100 Continue sent while the view reads the body goes out at once."""

    def __init__(self, body, sock: socket.socket):
        self._body, self._sock = body, sock
        _cork(sock, 1)

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        try:
            _cork(self._sock, 0)  # what is still held leaves now
        finally:
            if hasattr(self._body, "close"):
                self._body.close()


def _cork(sock: socket.socket, on: int) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, on)
    except OSError:  # the client has gone: nothing to send it
        pass


def corked(app):
    """The WSGI app with its answers' bodies corked (CorkedBody); a file answer keeps gunicorn's sendfile path, and an
    HTTP/2 stream (off by default) is never corked, since its socket carries other streams too."""
    def call(environ, start_response):
        body = app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        if sock is None or not hasattr(socket, "TCP_CORK") or isinstance(body, environ["wsgi.file_wrapper"]) \
                or not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1"):
            return body
        return CorkedBody(body, sock)
    return call


class ConnectionShares:
    """Each accepting worker's count of open connections, in memory the master maps before it forks (every worker,
    and every replacement, sees the same): a worker holding more than its share stops accepting, so the next
    connections go to the others. Slots are given out by the master (pre_fork) and freed when a worker exits; a
    worker counts only once it accepts (a replacement loading its model must not turn clients away), and only while
    its count is fresh (its loop publishes at least every second): a stalled worker cannot make the others refuse."""

    SLOTS = 64
    UNUSED = -1
    FRESH = 1.5  # seconds: gunicorn's loop waits at most 1 s between two turns

    def __init__(self) -> None:
        self.counts = memoryview(mmap.mmap(-1, 4 * (self.SLOTS + 1))).cast("i")  # the last: slots ever given out
        self.stamps = memoryview(mmap.mmap(-1, 8 * self.SLOTS)).cast("d")  # time.monotonic() is the machine's
        for slot in range(self.SLOTS):
            self.counts[slot] = self.UNUSED
        self.counts[self.SLOTS] = 0

    def free_slot(self, taken) -> int | None:
        slot = next((slot for slot in range(self.SLOTS) if slot not in taken), None)
        if slot is not None:
            self.counts[self.SLOTS] = max(self.counts[self.SLOTS], slot + 1)
        return slot

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.counts[slot] = self.UNUSED

    def over_share(self, slot: int, mine: int) -> bool:
        """Publish this worker's count; whether it holds more than one above the mean of the fresh ones."""
        now, mine = time.monotonic(), max(0, mine)
        self.counts[slot], self.stamps[slot] = mine, now
        used = self.counts[self.SLOTS]  # only those: this runs at every turn of a worker's loop
        others = [count for other, (count, stamp) in enumerate(zip(self.counts[:used], self.stamps[:used]))
                  if other != slot and count >= 0 and now - stamp < self.FRESH]
        return mine > (mine + sum(others)) / (1 + len(others)) + 1


class HeaderTimeoutWorker(gthread.ThreadWorker):
    header_timeout = 10.0  # seconds; gunicorn.conf.py sets AGSERVE_HEADER_TIMEOUT
    body_timeout = 10.0  # seconds; AGSERVE_BODY_TIMEOUT
    body_min_rate = 262144.0  # bytes/s; AGSERVE_BODY_MIN_RATE
    max_body_bytes = 32 * 2 ** 20  # AGSERVE_MAX_BODY_BYTES: a body declared longer goes to a thread for its 413 at once

    max_connection_age = 5.0  # seconds; AGSERVE_MAX_CONNECTION_AGE, 0: never
    shares: ConnectionShares | None = None  # gunicorn.conf.py makes it in the master; pre_fork sets share_slot
    share_slot: int | None = None

    @property
    def worker_connections(self) -> int:
        """gunicorn's limit on open connections, read by its loop before each wait: none more while this worker
        holds more than its share (ConnectionShares), so connections closed by age come back evened out."""
        if self.shares is None or self.share_slot is None:
            return self._connections
        if not self.alive:
            self.shares.release(self.share_slot)  # stopping: the others take every new connection
            return self._connections
        return self.nr_conns if self.shares.over_share(self.share_slot, self.nr_conns) else self._connections

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._connections = value

    def load_wsgi(self):
        """gunicorn's; a database out of reach while the app is built ends this worker as a failure the master
        answers by starting another, not as gunicorn's boot error, which stops the server and its serving workers
        with it (a worker recycled while the database restarted took its whole replica down)."""
        from app.db import DatabaseUnavailable

        try:
            super().load_wsgi()
        except DatabaseUnavailable as exc:
            self.log.error("worker cannot reach the database while starting (%s); another will be started", exc)
            time.sleep(BOOT_RETRY_SECONDS)  # the master starts the next one at once: not a tight loop
            raise SystemExit(1) from None
        self.wsgi = corked(self.wsgi)

    def get_thread_pool(self):
        return WarmestFirstPool(self.cfg.threads)

    def handle(self, conn):
        if self.cfg.is_ssl or gthread.negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            return super().handle(conn)  # TLS records or an HTTP/2 preface, not headers: gunicorn's own path
        while True:
            kept = self._handle_plain(conn)
            if kept is not True or not self._serves_next_itself(conn):
                return kept

    def handle_request(self, req, conn):
        """gunicorn's, with the answer closing the connection once it is max_connection_age old (see the setting).
        By age, not by a count of requests: a worker's connections then leave it in proportion to how many it holds,
        and reconnect to a worker within its share (a count made the split a random walk: a worker's connections
        left at its request rate, whatever their number)."""
        if self.max_connection_age:
            now = time.monotonic()
            if getattr(conn, "closes_after", None) is None:
                conn.closes_after = now + self.max_connection_age * random.uniform(0.9, 1.1)  # not all at once
            if now >= conn.closes_after:
                req.must_close = True  # gunicorn then answers "Connection: close" and closes
        return super().handle_request(req, conn)

    def finish_request(self, conn, fs):
        """gunicorn's, for a connection not already closed here (a 408): its graceful close raised on the closed
        socket and counted the connection gone twice, so the worker's count of open ones fell below zero."""
        if conn.sock.fileno() == -1:
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

    def _serves_next_itself(self, conn) -> bool:
        """Whether this thread serves a kept-alive client's next request at once, without the trip through the
        poller (two thread hand-offs, about 1.5 ms): when it is here or arrives within NEXT_REQUEST_WAIT, and no
        other request waits for a thread (then the connection queues behind them, else busy clients would starve
        the others)."""
        if not self.alive or self.tpool.waiting:
            return False
        if not conn.parser.unreader.buf.getvalue() and not select.select([conn.sock], [], [], NEXT_REQUEST_WAIT)[0]:
            return False
        return not self.tpool.waiting

    def _handle_plain(self, conn):
        arrived = self._gather_request(conn)
        if arrived is None:
            return gthread._DEFER  # back to the poller until more arrives
        if not arrived:
            return False  # closed
        kept = super().handle(conn)
        if not kept and conn.parser.unreader.sock.expired:
            _close_now(conn.sock)  # here, not in gunicorn's graceful close on the main loop (see _refuse)
        return kept

    def _gather_request(self, conn) -> bool | None:
        """True once the headers and the start of the body are in (handed to gunicorn's parser), None to wait,
        False to close."""
        now = time.monotonic()
        if getattr(conn, "header_deadline", None) is None:
            conn.header_deadline, conn.header_bytes, conn.body_started = now + self.header_timeout, bytearray(), None
        try:
            chunk = conn.sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            chunk = None
        except OSError:
            return False
        if chunk:
            conn.header_bytes += chunk
        held = conn.parser.unreader.buf.getvalue() if conn.parser is not None else b""
        data = held + conn.header_bytes
        limit = self.cfg.limit_request_line + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2)
        if chunk == b"" and not data:
            return False  # closed by the client before a request
        end = data.find(HEADERS_END)
        if end < 0 and len(data) <= limit and chunk != b"":
            if now < conn.header_deadline:
                return None
            self.log.info("Closed %s: its request headers were %.0f s late", conn.client, self.header_timeout)
            _refuse(conn.sock, HEADERS_LATE, "headers")
            return False
        if end >= 0 and chunk != b"":
            if conn.body_started is None:
                conn.body_started = now
            wanted = _body_ahead(data[:end + 2], self.max_body_bytes)
            have = len(data) - end - len(HEADERS_END)
            if have < wanted:
                if now < conn.body_started + self.body_timeout:
                    return None
                self.log.info("Closed %s: its request body was %.0f s late", conn.client, self.body_timeout)
                _refuse(conn.sock, BODY_LATE, "body")
                return False
        # Complete (or too long, or cut short: gunicorn's parser answers those): hand the bytes to the parser.
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.take_buffered()
        conn.parser.unreader.unread(bytes(data))
        started = conn.body_started or now
        conn.parser.unreader.sock = BodyClock(conn.sock, started, self.body_timeout, self.body_min_rate,
                                              max(0, len(data) - end - len(HEADERS_END)) if end >= 0 else 0)
        conn.header_deadline, conn.header_bytes, conn.data_ready = None, bytearray(), True
        return True


def _body_ahead(headers: bytes, max_body: int) -> int:
    """How many body bytes to gather before a thread takes the request: all of a small body of known length, the
    first BODY_AHEAD of a larger one; none when its length is not known here (chunked, or left to the parser), is
    past the body limit (the view answers 413 without reading it), or the client waits for gunicorn's 100 Continue."""
    if _NOT_AHEAD.search(headers):
        return 0
    lengths = _LENGTH.findall(headers)
    if len(lengths) != 1 or int(lengths[0]) > max_body:
        return 0
    return min(int(lengths[0]), BODY_AHEAD)


def _refuse(sock: socket.socket, answer: bytes, part: str) -> None:
    """Answer 408 and close here, in the thread: gunicorn's graceful close would linger up to 2 s on the worker's
    main loop for every such client, which is what a slow client wants."""
    from app.metrics import SLOW_CLIENTS  # not at import: the master imports this module before the metrics folder
    SLOW_CLIENTS.labels(part).inc()
    _drain(sock)
    try:
        sock.send(answer, socket.MSG_DONTWAIT)
    except OSError:
        pass
    _close_now(sock)


def _close_now(sock: socket.socket) -> None:
    """Close without lingering for the client, after taking what it sent so far (so the close sends no reset)."""
    _drain(sock)
    sock.close()


def _drain(sock: socket.socket) -> None:
    try:
        for _ in range(16):  # bounded
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                break
    except OSError:
        pass


class WarmestFirstPool:
    """The part of ThreadPoolExecutor gthread uses (submit, shutdown), waking the thread that went idle last.

    ThreadPoolExecutor's idle threads wait on one queue and take work in turn, so at concurrency 1 every request ran
    on another thread: a one-row predict_proba cost 8.7 ms there against 7.4 ms on one thread (measured, iris)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._lock = threading.Lock()
        self._idle: list[_Parked] = []  # a stack: the thread that finished last is woken first
        self._backlog: deque = deque()  # work while every thread is busy
        self._started = 0
        self._stopping = False

    @property
    def waiting(self) -> int:
        """Requests waiting for a thread."""
        return len(self._backlog)

    def submit(self, fn, *args) -> futures.Future:
        future = futures.Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("cannot schedule new work after shutdown")
            if self._idle:
                parked = self._idle.pop()
                parked.work = (future, fn, args)
                parked.wake.release()
                return future
            self._backlog.append((future, fn, args))
            if self._started < self.threads:
                self._started += 1
                threading.Thread(target=self._serve, name=f"agserve-request-{self._started}").start()
        return future

    def shutdown(self, wait: bool = False) -> None:
        """Idle threads end now, busy ones after their request (gunicorn never waits here; the interpreter joins
        them at exit, as ThreadPoolExecutor's)."""
        with self._lock:
            self._stopping = True
            idle, self._idle = self._idle, []
        for parked in idle:
            parked.wake.release()  # with no work: the thread ends

    def _serve(self) -> None:
        parked = _Parked()
        while True:
            with self._lock:
                work = self._backlog.popleft() if self._backlog else None
                if work is None:
                    if self._stopping:
                        return
                    parked.work = None
                    self._idle.append(parked)
            if work is None:
                parked.wake.acquire()  # released by submit (with work) or shutdown (without)
                work = parked.work
                if work is None:
                    return
            future, fn, args = work
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the future, as ThreadPoolExecutor does
                    future.set_exception(exc)
            del work, future, fn, args  # an idle thread holds no finished connection


class _Parked:
    """An idle thread's wake-up: a lock held while the thread waits on it, and the work it is woken with."""

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.work = None
