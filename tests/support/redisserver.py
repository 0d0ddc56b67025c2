"""A real redis-server (Debian's package) on a free loopback port, always stopped; it can be killed and restarted
on the same port to test outages."""
from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from tests.support.servers import free_port


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen | None = None
    password: str = ""
    tls: tuple[str, str] | None = None  # (certificate file, key file): serve TLS only, on port

    @property
    def url(self) -> str:
        scheme, auth = ("rediss" if self.tls else "redis"), (f":{self.password}@" if self.password else "")
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0" + (f"?ssl_ca_certs={self.tls[0]}" if self.tls else "")

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: `make test` installs Debian's redis-server package"
        extra = ["--requirepass", self.password] if self.password else []
        if self.tls:
            extra += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls[0],
                      "--tls-key-file", self.tls[1], "--tls-ca-cert-file", self.tls[0], "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, with whatever it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def client(self):
        import redis
        return redis.Redis.from_url(self.url, socket_timeout=2)


@contextlib.contextmanager
def redis_server(password: str = "", tls: tuple[str, str] | None = None):
    server = RedisServer(free_port(), password=password, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.kill()
