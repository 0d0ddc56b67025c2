"""Real alert receivers on loopback for tests: an SMTP server with STARTTLS and login (aiosmtpd), an HTTP webhook
receiver, and a 'dead' server that accepts connections and never answers. Each is always stopped."""
from __future__ import annotations

import contextlib
import datetime
import email
import ipaddress
import json
import socket
import ssl
import threading
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

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


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
