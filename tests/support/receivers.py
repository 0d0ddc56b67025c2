"""Real receivers on loopback for tests: an SMTP server with STARTTLS and login (aiosmtpd), an HTTP webhook
receiver, an OpenTelemetry collector's OTLP/HTTP traces endpoint, and a 'dead' server that accepts connections and
never answers. Each is always stopped."""
from __future__ import annotations

import contextlib
import datetime
import email
import ipaddress
import json
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.servers import free_port


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (IP subject alternative name), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Mailbox:
    port: int
    messages: list = field(default_factory=list)  # email.message.Message, in arrival order
    logins: list = field(default_factory=list)  # (login, succeeded)
    tls_sessions: int = 0  # messages that arrived over TLS


@contextlib.contextmanager
def smtp_server(cert: Path, key: Path, login: str, password: str):
    """aiosmtpd on 127.0.0.1 that requires STARTTLS before anything, and a login before mail."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    mailbox = Mailbox(free_port())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mailbox.tls_sessions += session.ssl is not None  # set by aiosmtpd once STARTTLS completed
            mailbox.messages.append(email.message_from_bytes(envelope.content))
            return "250 Message accepted"

    def authenticate(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login.decode() == login and data.password.decode() == password
        mailbox.logins.append((data.login.decode() if isinstance(data, LoginPassword) else None, ok))
        return AuthResult(success=ok)

    controller = Controller(Handler(), hostname="127.0.0.1", port=mailbox.port, tls_context=context,
                               require_starttls=True, auth_required=True, auth_require_tls=True,
                               authenticator=authenticate)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@dataclass
class Webhook:
    url: str
    posts: list = field(default_factory=list)  # JSON bodies
    answers: list = field(default_factory=list)  # statuses to answer, in order; 200 once they run out


@contextlib.contextmanager
def _serving(port: int, handler: type[BaseHTTPRequestHandler]):
    """An HTTP server on loopback in a thread of its own, shut down on leaving."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def webhook_receiver(answers: list[int] | None = None):
    port = free_port()
    hook = Webhook(f"http://127.0.0.1:{port}/hook", answers=list(answers or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                status = hook.answers.pop(0) if hook.answers else 200
                if status == 200:
                    hook.posts.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with _serving(port, Handler):
        yield hook


@dataclass
class Span:
    """One exported span, decoded from OTLP protobuf; ids in lowercase hex as in a traceparent."""
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    name: str
    kind: int  # opentelemetry.proto SpanKind: 2 is SERVER
    attributes: dict
    links: list  # (trace_id, span_id, attributes)
    start_ns: int
    end_ns: int
    service: str


@dataclass
class Collector:
    """What the OTLP receiver was sent."""
    url: str  # the base URL to set as AGSERVE_OTLP_ENDPOINT
    spans: list = field(default_factory=list)
    paths: list = field(default_factory=list)

    def wait_for(self, condition, timeout: float = 15.0) -> list:
        """The spans once condition(spans) holds (the workers export in the background), else AssertionError."""
        deadline = time.monotonic() + timeout
        while not condition(list(self.spans)):
            assert time.monotonic() < deadline, \
                f"{len(self.spans)} spans never satisfied the condition; the last: {[s.name for s in self.spans[-20:]]}"
            time.sleep(0.05)
        return list(self.spans)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs) -> dict:
    return {pair.key: _value(pair.value) for pair in pairs}


@contextlib.contextmanager
def otlp_receiver():
    """An OTLP/HTTP traces endpoint (POST /v1/traces, ExportTraceServiceRequest in protobuf), as a collector has."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                          ExportTraceServiceResponse)

    port = free_port()
    collector = Collector(f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            export = ExportTraceServiceRequest.FromString(body)
            spans = [Span(span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name, span.kind,
                          _attributes(span.attributes),
                          [(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                           for link in span.links],
                          span.start_time_unix_nano, span.end_time_unix_nano,
                          _attributes(resource.resource.attributes).get("service.name"))
                     for resource in export.resource_spans for scope in resource.scope_spans for span in scope.spans]
            with lock:
                collector.paths.append(self.path)
                collector.spans.extend(spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    with _serving(port, Handler):
        yield collector


@dataclass
class DeadServer:
    port: int
    connections: int = 0


@contextlib.contextmanager
def dead_server():
    """Accepts TCP connections and never says a word: the worst kind of broken SMTP relay or webhook."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    dead = DeadServer(listener.getsockname()[1])
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(connection)
            dead.connections += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield dead
    finally:
        stopping.set()
        thread.join(2)
        for connection in held:
            connection.close()
        listener.close()
