"""The gunicorn worker: gthread, except that a request's headers are gathered without holding a thread.

Stock gthread hands a connection to a thread as soon as its first byte arrives, and the thread then blocks until the
headers are complete: a few dozen clients trickling one header line every few seconds (slowloris) hold every thread
of every worker, and nothing else is answered. Here a thread only takes what has arrived (a non-blocking read) and
gives the connection back to the worker's poller until the blank line that ends the headers is in; a connection costs
a file descriptor and its bytes until then, never a thread, and is closed (408) once its headers are
AGSERVE_HEADER_TIMEOUT seconds late. Connections that send nothing are closed after gunicorn's keep-alive time, and
at most worker_connections are open per worker (more wait in the listen backlog).
"""
from __future__ import annotations

import socket
import time

from gunicorn.workers import gthread

HEADERS_END = b"\r\n\r\n"
_BODY = b'{"error": "the request headers did not arrive in time", "details": {}, "request_id": null}\n'
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


class HeaderTimeoutWorker(gthread.ThreadWorker):
    header_timeout = 10.0  # seconds; gunicorn.conf.py sets AGSERVE_HEADER_TIMEOUT

    def handle(self, conn):
        if self.cfg.is_ssl or gthread.negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            return super().handle(conn)  # TLS records or an HTTP/2 preface, not headers: gunicorn's own path
        arrived = self._gather_headers(conn)
        if arrived is None:
            return gthread._DEFER  # back to the poller until more arrives
        if not arrived:
            return False  # closed
        return super().handle(conn)

    def _gather_headers(self, conn) -> bool | None:
        """True once the headers are complete (handed to gunicorn's parser), None to wait, False to close."""
        now = time.monotonic()
        if getattr(conn, "header_deadline", None) is None:
            conn.header_deadline, conn.header_bytes = now + self.header_timeout, bytearray()
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
        if HEADERS_END not in data and len(data) <= limit and chunk != b"":
            if now < conn.header_deadline:
                return None
            self.log.info("Closed %s: its request headers were %.0f s late", conn.client, self.header_timeout)
            _refuse(conn.sock)
            return False
        # Complete (or too long, or cut short: gunicorn's parser answers those): hand the bytes to the parser.
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.take_buffered()
        conn.parser.unreader.unread(bytes(data))
        conn.header_deadline, conn.header_bytes, conn.data_ready = None, bytearray(), True
        return True


def _refuse(sock: socket.socket) -> None:
    """Answer 408 and close here, in the thread: gunicorn's graceful close would linger up to 2 s on the worker's
    main loop for every such client, which is what a slow client wants."""
    try:
        for _ in range(16):  # what it sent so far (bounded), so the close sends no reset
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                break
    except OSError:
        pass
    try:
        sock.send(TIMED_OUT, socket.MSG_DONTWAIT)
    except OSError:
        pass
    sock.close()
