"""deploy/nginx.conf run for real (Debian's nginx) in front of a real gunicorn: the audit log and request logs record
the client nginx saw, not nginx; TLS 1.2+ only, HSTS, one X-Request-ID; anonymous floods get 429 in the JSON error
shape while a credentialed caller goes on; a caller's traceparent reaches the worker, whose spans keep its trace."""
from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import ssl
import subprocess
import time

import pytest

from tests.support.receivers import otlp_receiver, self_signed_certificate
from tests.support.servers import ROOT, free_port, gunicorn, stop

CLIENT = "127.0.0.2"  # another loopback address: nginx itself reaches gunicorn from 127.0.0.1


@contextlib.contextmanager
def nginx(tmp_path, upstream: str):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    local = (text.replace("server api:8000;", f"server {upstream};").replace("listen 80;", f"listen {free_port()};")
             .replace("listen 443 ssl", f"listen 127.0.0.1:{port} ssl")
             .replace("/etc/nginx/tls/tls.crt", str(cert)).replace("/etc/nginx/tls/tls.key", str(key))
             .replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    assert local.count(str(port)) == 1 and upstream in local
    (tmp_path / "nginx.conf").write_text(local)
    process = subprocess.Popen([binary, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                                "-g", "daemon off; user root;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with contextlib.closing(connection(port)) as probe:
                    probe.connect()
                    break
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.1)
        yield port
    finally:
        stop(process)


def connection(port: int, **context) -> http.client.HTTPSConnection:
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the test's own self-signed certificate
    tls.set_ciphers(context.pop("ciphers", "ALL:@SECLEVEL=0"))  # offer old suites: nginx must be the one to refuse
    tls.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    for name, value in context.items():
        setattr(tls, name, value)
    return http.client.HTTPSConnection("127.0.0.1", port, source_address=(CLIENT, 0), context=tls, timeout=10)


def call(port, method, path, body=None, headers=None):
    with contextlib.closing(connection(port)) as conn:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json", **(headers or {})})
        answer = conn.getresponse()
        return answer, answer.read(), conn.sock.version() if conn.sock else None


@pytest.mark.server
def test_nginx_passes_the_real_client_and_guards_the_edge(repository_path, tmp_path):
    with gunicorn(repository_path, workers=1, log_path=tmp_path / "server.log", AGSERVE_MODELS="binary",
                  AGSERVE_TRUSTED_PROXIES="1", AGSERVE_LOG_LEVEL="info") as server, \
            nginx(tmp_path, server.base.removeprefix("http://")) as port:
        admin = {"X-API-Key": server.key}
        created, body, version = call(port, "POST", "/admin/keys", {"owner": "via-nginx", "scopes": ["predict"]},
                                      {**admin, "X-Request-ID": "edge-1"})
        assert created.status == 201, body
        assert version in ("TLSv1.2", "TLSv1.3")
        assert created.getheader("Strict-Transport-Security").startswith("max-age=")
        assert [v for k, v in created.getheaders() if k.lower() == "x-request-id"] == ["edge-1"]  # once

        audit, body, _ = call(port, "GET", "/admin/audit", headers=admin)
        [entry] = [e for e in json.loads(body)["entries"] if e["action"] == "key.create"]
        assert entry["source"] == CLIENT  # not nginx's 127.0.0.1
        lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
                 if line.startswith("{")]
        assert [line["remote_addr"] for line in lines if line.get("request_id") == "edge-1"] == [CLIENT]

        for offer in ({"maximum_version": ssl.TLSVersion.TLSv1_1},
                      {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE-ECDSA-AES128-SHA"}):
            with pytest.raises(ssl.SSLError):  # TLS 1.1, and TLS 1.2 with a CBC/SHA-1 suite, are refused
                connection(port, **offer).connect()

        with contextlib.closing(connection(port)) as flood:  # anonymous, on one kept-alive connection: fast
            statuses, refusals = [], []
            for _ in range(100):
                flood.request("GET", "/health/live")
                answer = flood.getresponse()
                body = answer.read()
                statuses.append(answer.status)
                if answer.status == 429:
                    refusals.append(body)  # judged from the flood itself: a later call may find a refilled token
        assert statuses[:20] == [200] * 20 and statuses.count(429) >= 40  # a burst of 20, then 10 per second
        body = refusals[-1]
        assert set(json.loads(body)) == {"error", "details", "request_id"}
        assert re.fullmatch(r"[0-9a-f]{32}", json.loads(body)["request_id"])
        assert call(port, "GET", "/admin/audit", headers=admin)[0].status == 200  # a credential still passes


@pytest.mark.server
def test_nginx_passes_the_callers_traceparent_to_the_worker(repository_path, tmp_path):
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp_receiver() as collector, \
            gunicorn(repository_path, workers=1, AGSERVE_MODELS="binary", AGSERVE_OTLP_ENDPOINT=collector.url,
                     OTEL_BSP_SCHEDULE_DELAY="50") as server, \
            nginx(tmp_path, server.base.removeprefix("http://")) as port:
        answer, body, _ = call(port, "GET", "/models/binary", headers={
            "X-API-Key": server.key, "X-Request-ID": "edge-traced", "traceparent": f"00-{trace_id}-{caller_span}-01"})
        assert answer.status == 200, body
        spans = collector.wait_for(lambda spans: any(s.attributes.get("agserve.request_id") == "edge-traced"
                                                     for s in spans))
        [span] = [s for s in spans if s.attributes.get("agserve.request_id") == "edge-traced"]
        assert (span.name, span.trace_id, span.parent_id) == ("GET /models/<name>", trace_id, caller_span)
        assert answer.getheader("traceparent").split("-")[1] == trace_id


def test_without_trusted_proxies_the_peer_is_the_client(repository_path, tmp_path):
    from tests.support.apps import build_app, client_with_key

    for trusted, expected in ((0, "10.0.0.9"), (1, "203.0.113.7")):
        app = build_app(tmp_path / f"auth{trusted}.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary",
                        LOAD_MODELS_ON_START=False, TRUSTED_PROXIES=trusted)
        client = client_with_key(app)
        client.environ_base["REMOTE_ADDR"] = "10.0.0.9"  # the proxy
        spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # the client's own claim, then nginx's entry
        assert client.post("/admin/keys", json={"owner": "x", "scopes": ["predict"]}, headers=spoofed).status_code == 201
        [entry] = client.get("/admin/audit").get_json()["entries"]
        assert entry["source"] == expected
