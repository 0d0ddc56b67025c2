"""Hostile input through a real gunicorn: exact statuses, the JSON error shape, no 5xx, no worker lost."""
from __future__ import annotations

import json
import socket
import time

import psutil
import pytest
import requests

from app.inference.served import ServedModel
from tests.data import FEATURES, to_records
from tests.servers import gunicorn

pytestmark = pytest.mark.server
LIMIT = 4 * 1024 * 1024
SHAPE = {"error", "details", "request_id"}


@pytest.fixture(scope="module")
def row(dataset):
    return to_records(dataset[1][FEATURES].dropna().head(1))[0]


@pytest.fixture(scope="module")
def server(repository_path):
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_MAX_BODY_BYTES=str(LIMIT)) as running:
        yield running


def hostile_requests(row):
    """(name, request kwargs, expected status)."""
    good = json.dumps({"data": [dict(row, num=0.125)]})
    json_type = {"Content-Type": "application/json"}
    invalid_row = {"num": "x", "cnt": 1.5, "color": 3, "flag": "maybe", "when": "soon", "note": 9}

    def chunks():
        for _ in range(LIMIT // 65536 + 8):
            yield b" " * 65536

    return [
        ("body over the limit", dict(method="POST", data=b" " * (LIMIT + 1), headers=json_type), 413),
        ("chunked body over the limit", dict(method="POST", data=chunks(), headers=json_type), 413),
        ("malformed JSON", dict(method="POST", data=b'{"data": [{"num": }', headers=json_type), 400),
        ("non-UTF-8", dict(method="POST", data=b'{"data": [{"color": "\xc3\x28"}]}', headers=json_type), 400),
        ("NaN", dict(method="POST", data=good.replace("0.125", "NaN"), headers=json_type), 422),
        ("Infinity", dict(method="POST", data=good.replace("0.125", "Infinity"), headers=json_type), 422),
        ("1e999", dict(method="POST", data=good.replace("0.125", "1e999"), headers=json_type), 422),
        ("deeply nested", dict(method="POST", data=b'{"data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                               headers=json_type), 400),
        ("wrong content type", dict(method="POST", data=good, headers={"Content-Type": "text/plain"}), 415),
        ("form body", dict(method="POST", data={"data": "x"}), 415),
        ("PATCH", dict(method="PATCH", data=good, headers=json_type), 405),
        ("custom verb", dict(method="BREW", data=good, headers=json_type), 405),
        ("rows that are not objects", dict(method="POST", json={"data": [1] * 10_000}), 422),
        ("huge all-invalid batch", dict(method="POST", json={"data": [invalid_row] * 10_000}), 422),
    ]


def run_suite(server, row):
    outcomes = {}
    for name, kwargs, expected in hostile_requests(row):
        headers = {"X-API-Key": server.key, **kwargs.pop("headers", {})}
        started = time.monotonic()
        response = requests.request(url=f"{server.base}/predict", headers=headers, timeout=30, **kwargs)
        elapsed = time.monotonic() - started
        assert response.status_code < 500, (name, response.text[:300])
        assert response.headers["Content-Type"] == "application/json", name
        assert set(response.json()) == SHAPE, name
        outcomes[name] = (response.status_code, expected, elapsed, len(response.content))
    return outcomes


def workers(server):
    return {child.pid: child for child in psutil.Process(server.process.pid).children()}


def test_hostile_bodies_get_exact_statuses_and_cost_no_worker(server, row):
    http = server.session()
    assert http.post(f"{server.base}/predict", json={"data": [row]}, timeout=10).status_code == 200
    before = workers(server)
    rss_before = {pid: proc.memory_info().rss for pid, proc in before.items()}

    for _ in range(3):
        outcomes = run_suite(server, row)
        wrong = {name: (got, want) for name, (got, want, _, _) in outcomes.items() if got != want}
        assert not wrong, wrong
        _, _, elapsed, size = outcomes["huge all-invalid batch"]
        assert elapsed < 1.0 and size < 100_000

    after = workers(server)
    assert set(after) == set(before), "a worker died or was replaced"
    growth = {pid: (after[pid].memory_info().rss - rss_before[pid]) / 2**20 for pid in after}
    assert all(mb < 50 for mb in growth.values()), growth
    for _ in range(4):
        assert http.post(f"{server.base}/predict", json={"data": [row]}, timeout=10).status_code == 200


def test_oversized_headers_are_refused_by_gunicorn(server, row):
    response = requests.post(f"{server.base}/predict", json={"data": [row]}, timeout=10,
                             headers={"X-API-Key": server.key, "X-Padding": "p" * 9000})
    assert response.status_code in (400, 431)
    too_many = {f"X-Extra-{i}": "1" for i in range(120)}
    assert requests.get(f"{server.base}/health/live", headers=too_many, timeout=10).status_code in (400, 431)
    assert server.session().post(f"{server.base}/predict", json={"data": [row]}, timeout=10).status_code == 200


def test_a_request_line_that_is_too_long_is_refused(server):
    with socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).split(b" ")[1] in (b"400", b"414")


def test_an_all_invalid_batch_is_refused_without_building_a_dataframe(app, client, monkeypatch):
    def refuse(self, rows):
        raise AssertionError("a DataFrame was built for invalid rows")

    monkeypatch.setattr(ServedModel, "frame", refuse)
    invalid = {"num": "x", "cnt": 1.5, "color": 3, "flag": "maybe", "when": "soon", "note": 9}
    started = time.monotonic()
    response = client.post("/predict", json={"data": [invalid] * 10_000})
    assert time.monotonic() - started < 1.0
    body = response.get_json()
    assert response.status_code == 422
    assert body["details"]["invalid_rows"] == 10_000 and body["details"]["reported_rows"] == 100
