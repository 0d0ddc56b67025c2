"""Hostile input through a real gunicorn: exact statuses, the JSON error shape, no 5xx, no worker lost."""
from __future__ import annotations

import json
import socket
import subprocess
import time

import psutil
import pytest
import requests

from app.inference.served import ServedModel
from tests.support.data import FEATURES, to_records
from tests.support.servers import BIN, ROOT, gunicorn, server_env

pytestmark = pytest.mark.server
LIMIT = 4 * 1024 * 1024
SHAPE = {"error", "details", "request_id"}


@pytest.fixture(scope="module")
def row(dataset):
    return to_records(dataset[1][FEATURES].dropna().head(1))[0]


@pytest.fixture(scope="module")
def server(repository_path):
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary,regression", AGSERVE_DEFAULT_MODEL="binary",
                  AGSERVE_MAX_BODY_BYTES=str(LIMIT), AGSERVE_MONITOR_FLUSH_SECONDS="0.1") as running:
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


def test_oversized_or_unparsable_headers_are_refused_by_gunicorn_in_the_house_shape(server, row):
    too_many = {f"X-Extra-{i}": "1" for i in range(120)}
    for headers in ({"X-API-Key": server.key, "X-Padding": "p" * 9000}, too_many,
                    {"X-API-Key": server.key, "tracestate": b"a=\x1fb"}):  # a control character in a value
        response = requests.post(f"{server.base}/predict", json={"data": [row]}, headers=headers, timeout=10)
        assert response.status_code in (400, 431), response.text[:200]
        assert response.headers["Content-Type"] == "application/json", response.text[:200]
        assert set(response.json()) == {"error", "details", "request_id"}
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


# --- Regressions: each answered 500 before, some with lasting damage -------------------------------------------------
def refused(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == SHAPE
    return body


def post_json(server, path: str, text: bytes):
    return server.session().post(f"{server.base}{path}", data=text, headers={"Content-Type": "application/json"},
                                 timeout=30)


@pytest.mark.parametrize("surrogate", [b"\\ud800", b"\\udfff", b"\xed\xa0\x80"], ids=["escaped", "low", "raw"])
def test_a_lone_surrogate_as_key_or_value_is_400_naming_where(server, row, surrogate):
    good = json.dumps({"data": [row]}).encode()
    as_value = good.replace(json.dumps(row["color"]).encode(), b'"red' + surrogate + b'"')
    as_key = good.replace(b'"color"', b'"col' + surrogate + b'or"')
    assert refused(post_json(server, "/predict", as_value), 400)["details"]["field"] == "$.data[0].color"
    assert refused(post_json(server, "/predict", as_key), 400)["details"]["field"] == "a key of $.data[0]"
    v2 = b'{"inputs": [{"name": "color", "datatype": "BYTES", "shape": [1], "data": ["' + surrogate + b'"]}]}'
    assert refused(post_json(server, "/v2/models/binary/infer", v2), 400)["details"]["field"] == \
        "$.inputs[0].data[0]"
    owner = b'{"owner": "a' + surrogate + b'", "scopes": ["predict"]}'
    assert refused(post_json(server, "/admin/keys", owner), 400)["details"]["field"] == "$.owner"
    assert server.session().get(f"{server.base}/admin/keys", timeout=10).status_code == 200
    assert server.session().post(f"{server.base}/predict", json={"data": [row]}, timeout=10).status_code == 200


BEYOND_INT64 = [b"1e20", b"1" + b"0" * 400, str(2 ** 63).encode(), str(2 ** 64 - 1).encode(), b"1.5e300",
                str(-(2 ** 63) - 1).encode(), b"9.3e18"]


@pytest.mark.parametrize("literal", BEYOND_INT64, ids=lambda b: b.decode()[:12])
def test_integers_beyond_int64_are_refused_on_json_csv_and_v2(server, row, literal):
    """Refused, never wrapped: 1e20 broke the cache key, 2**63..2**64 reached AutoGluon as a negative number."""
    text = json.dumps({"data": [dict(row, cnt=12345)]}).encode().replace(b"12345", literal)
    details = refused(post_json(server, "/predict", text), 422)["details"]
    assert "64-bit" in details["rows"]["0"]["cnt"][0] or "integer" in details["rows"]["0"]["cnt"][0]
    split = json.dumps({"data": {"columns": FEATURES, "data": [[dict(row, cnt=12345)[f] for f in FEATURES]]}})
    refused(post_json(server, "/predict", split.encode().replace(b"12345", literal)), 422)
    cells = ",".join("" if row[f] is None else str(row[f]) for f in FEATURES).encode()
    csv_body = ",".join(FEATURES).encode() + b"\n" + cells.replace(str(row["cnt"]).encode(), literal, 1) + b"\n"
    assert b"," + literal + b"," in csv_body
    response = server.session().post(f"{server.base}/predict", data=csv_body, headers={"Content-Type": "text/csv"},
                                     timeout=30)
    assert "cnt" in refused(response, 422)["details"]["rows"]["0"]
    datatypes = {"num": "FP64", "cnt": "INT64", "flag": "BOOL"}
    tensors = json.dumps({"inputs": [{"name": f, "datatype": datatypes.get(f, "BYTES"), "shape": [1],
                                      "data": [12345 if f == "cnt" else row[f]]} for f in FEATURES]})
    v2 = post_json(server, "/v2/models/binary/infer", tensors.encode().replace(b"12345", literal))
    assert "cnt" in refused(v2, 400)["details"]["rows"]["0"]


@pytest.mark.parametrize("value", [2 ** 63 - 1, -(2 ** 63), 2 ** 53 + 1])
def test_int64_extremes_reach_autogluon_exactly(server, row, in_process, value):
    from tests.support.answers import expected_answers
    from tests.support.hostile_values import reference_frame

    extreme = dict(row, cnt=value)
    expected = expected_answers(in_process["binary"], reference_frame([extreme]))
    cells = ",".join(str(extreme[f]) for f in FEATURES)
    answers = [server.session().post(f"{server.base}/predict", json={"data": [extreme]}, timeout=30),
               server.session().post(f"{server.base}/predict", data=f"{','.join(FEATURES)}\n{cells}\n".encode(),
                                     headers={"Content-Type": "text/csv"}, timeout=30)]
    for answer in answers:
        assert answer.status_code == 200, answer.text[:300]
        assert (answer.json()["predictions"], answer.json()["probabilities"]) == expected


def agserve_keys_list(server) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "agserve"), "keys", "list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=server_env(AGSERVE_AUTH_DB=str(server.auth_db)))


@pytest.mark.parametrize("expires_in", ["9999999999999999999d", "3651d", "315360001s", "99999999999999h"])
def test_an_expiry_beyond_ten_years_is_422_and_stores_nothing(server, expires_in):
    http = server.session()
    before = http.get(f"{server.base}/admin/keys", timeout=10).json()["keys"]
    body = refused(http.post(f"{server.base}/admin/keys", json={"owner": "x", "scopes": ["predict"],
                                                               "expires_in": expires_in}, timeout=10), 422)
    assert "expires_in" in body["details"]
    listing = http.get(f"{server.base}/admin/keys", timeout=10)
    assert listing.status_code == 200 and listing.json()["keys"] == before
    assert agserve_keys_list(server).returncode == 0


def test_an_expiry_of_exactly_ten_years_is_accepted_and_listed(server):
    """The bound itself, once: the refusals above leave it alone."""
    http = server.session()
    ten_years = http.post(f"{server.base}/admin/keys", json={"owner": "x", "scopes": ["predict"],
                                                            "expires_in": "3650d"}, timeout=10)
    in_ten_years = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3650 * 86400))
    assert ten_years.status_code == 201 and ten_years.json()["expires_at"].startswith(in_ten_years)
    assert http.get(f"{server.base}/admin/keys", timeout=10).status_code == 200
    listed = agserve_keys_list(server)
    assert listed.returncode == 0 and ten_years.json()["id"] in listed.stdout


@pytest.mark.parametrize("actual", [b"1" + b"0" * 400, b"-" + b"9" * 400, b"1e999", b"NaN", b"Infinity"],
                         ids=["400 digits", "-400 digits", "1e999", "NaN", "Infinity"])
def test_feedback_with_a_number_no_float64_holds_is_422(server, row, actual):
    http = server.session()
    answer = http.post(f"{server.base}/models/regression/predict", json={"data": [row]}, timeout=30)
    prediction_id = f'{answer.json()["request_id"]}:0'
    deadline = time.monotonic() + 10
    while True:  # the worker's flush stores the answered prediction within a moment
        response = post_json(server, "/feedback", b'{"prediction_id": "' + prediction_id.encode() +
                             b'", "actual": ' + actual + b"}")
        if response.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert refused(response, 422)["details"]["items"]["0"]["actual"] == ["must be a finite number"]
    assert http.post(f"{server.base}/feedback", json={"prediction_id": prediction_id, "actual": 1.5},
                     timeout=10).status_code == 200
