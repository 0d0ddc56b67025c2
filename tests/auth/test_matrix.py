"""The auth matrix on every protected route: none, malformed, wrong, revoked, expired, wrong scope, good."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.auth import ACCESS
from tests.auth.conftest import hs_token
from tests.data import FEATURES, to_records

PUBLIC = {("GET", "/health"), ("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/v2/health/live"),
          ("GET", "/v2/health/ready"), ("GET", "/v2/models/<name>/ready"),
          ("GET", "/v2/models/<name>/versions/<version>/ready"), ("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/docs/"), ("GET", "/docs/static/<path:filename>")}


def good_calls(app, row):
    """How to call each protected route successfully: (method, rule) → (path, json body, expected status)."""
    store = app.extensions["agserve.keys"]
    repository = app.extensions["agserve.models"].repository

    def with_history():
        repository.activate("binary", "2")
        return "/admin/models/binary/rollback", None, 200

    def with_prediction():
        key, _ = store.create("matrix-feedback", ["predict"])
        answer = app.test_client().post("/predict", json={"data": [row]}, headers={"X-API-Key": key})
        return "/feedback", {"request_id": answer.get_json()["request_id"], "actual": "yes"}, 200

    return {
        ("POST", "/predict"): lambda: ("/predict", {"data": [row]}, 200),
        ("POST", "/models/<name>/predict"): lambda: ("/models/binary/predict", {"data": [row]}, 200),
        ("POST", "/explain"): lambda: ("/explain", {"data": [row]}, 200),
        ("POST", "/models/<name>/explain"): lambda: ("/models/binary/explain", {"data": [row]}, 200),
        ("GET", "/models"): lambda: ("/models", None, 200),
        ("GET", "/model/info"): lambda: ("/model/info", None, 200),
        ("GET", "/models/<name>"): lambda: ("/models/binary", None, 200),
        ("GET", "/models/<name>/schema"): lambda: ("/models/binary/schema", None, 200),
        # A key shorter-lived than the matrix's tokens: a token may not create one that outlives it.
        ("POST", "/admin/keys"): lambda: ("/admin/keys", {"owner": "matrix", "scopes": ["predict"], "expires_in": "1m"},
                                          201),
        ("GET", "/admin/keys"): lambda: ("/admin/keys", None, 200),
        ("DELETE", "/admin/keys/<key_id>"): lambda: (f"/admin/keys/{store.create('victim', ['predict'])[1].id}",
                                                     None, 200),
        ("POST", "/admin/tokens"): lambda: ("/admin/tokens", {"sub": "x", "scopes": ["predict"], "ttl": "5m"}, 201),
        ("GET", "/admin/audit"): lambda: ("/admin/audit", None, 200),
        ("GET", "/admin/models/<name>/versions"): lambda: ("/admin/models/binary/versions", None, 200),
        ("POST", "/admin/models/<name>/promote"): lambda: ("/admin/models/binary/promote",
                                                           {"version": "2", "force": True}, 200),
        ("POST", "/admin/models/<name>/rollback"): with_history,
        ("GET", "/metrics"): lambda: ("/metrics", None, 200),
        ("GET", "/admin/status"): lambda: ("/admin/status", None, 200),
        ("POST", "/feedback"): with_prediction,
        ("GET", "/admin/models/<name>/drift"): lambda: ("/admin/models/binary/drift", None, 200),
        ("GET", "/admin/models/<name>/quality"): lambda: ("/admin/models/binary/quality", None, 200),
        ("GET", "/admin/alerts"): lambda: ("/admin/alerts", None, 200),
        ("DELETE", "/admin/cache"): lambda: ("/admin/cache", None, 200),
        ("GET", "/v2"): lambda: ("/v2", None, 200),
        ("GET", "/v2/models/<name>"): lambda: ("/v2/models/binary", None, 200),
        ("GET", "/v2/models/<name>/versions/<version>"): lambda: (
            f"/v2/models/binary/versions/{app.extensions['agserve.models'].get('binary').version}", None, 200),
        ("POST", "/v2/models/<name>/infer"): lambda: ("/v2/models/binary/infer", v2_body(row), 200),
        ("POST", "/v2/models/<name>/versions/<version>/infer"): lambda: (
            f"/v2/models/binary/versions/{app.extensions['agserve.models'].get('binary').version}/infer",
            v2_body(row), 200),
    }


def v2_body(row):
    """One row as V2 tensors, one per feature (datatypes from the served model's metadata)."""
    from app.api.v2 import DATATYPES
    kinds = {"num": "numeric", "cnt": "integer", "color": "category", "flag": "boolean", "when": "datetime",
             "note": "text"}
    return {"inputs": [{"name": k, "shape": [1], "datatype": DATATYPES[kinds[k]],
                        "data": [row[k] if row[k] is not None or DATATYPES[kinds[k]] != "BYTES" else ""]}
                       for k in row]}


def routes(app):
    """Every (method, rule) the app serves, with the access rule its view declares."""
    found = {}
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found[(method, rule.rule)] = getattr(app.view_functions[rule.endpoint], ACCESS)
    return found


@pytest.fixture(scope="module")
def row(dataset):
    _, test = dataset
    return to_records(test[FEATURES].head(1))[0]


def test_every_route_is_public_by_name_or_covered_by_the_matrix(auth_app, row):
    declared = routes(auth_app)
    assert {route for route, access in declared.items() if access == "public"} == PUBLIC
    assert set(good_calls(auth_app, row)) == {route for route, access in declared.items() if access != "public"}


def credentials(app, scope):
    """The seven credential cases for a route needing scope: (label, headers, expected status or None=good)."""
    store = app.extensions["agserve.keys"]
    good, _ = store.create("good", [scope])
    known_id = good.split("_")[1]
    revoked, record = store.create("revoked", [scope])
    store.revoke(record.id)
    expired, _ = store.create("expired", [scope], expires_at=time.time() - 1)
    others = [s for s in ("predict", "explain", "model_info", "admin", "metrics") if s != scope]
    wrong_scope, _ = store.create("wrong-scope", others)
    return [
        ("none", {}, 401),
        ("malformed", {"X-API-Key": "not-a-key"}, 401),
        ("wrong", {"X-API-Key": f"agk_{known_id}_{'A' * 43}"}, 401),
        ("revoked", {"X-API-Key": revoked}, 401),
        ("expired", {"X-API-Key": expired}, 401),
        ("wrong scope", {"X-API-Key": wrong_scope}, 403),
        ("good", {"X-API-Key": good}, None),
        ("jwt malformed", {"Authorization": "Bearer not.a.jwt"}, 401),
        ("jwt not bearer", {"Authorization": f"Basic {good}"}, 401),
        ("jwt wrong key", {"Authorization": f"Bearer {hs_token(secret='w' * 40, scope=scope)}"}, 401),
        ("jwt expired", {"Authorization": f"Bearer {hs_token(scope=scope, exp=int(time.time()) - 3600)}"}, 401),
        ("jwt wrong scope", {"Authorization": f"Bearer {hs_token(scope=' '.join(others))}"}, 403),
        ("jwt good", {"Authorization": f"Bearer {hs_token(scope=scope)}"}, None),
        ("key as bearer", {"Authorization": f"Bearer {good}"}, None),
        ("revoked key as bearer", {"Authorization": f"Bearer {revoked}"}, 401),
    ]


def test_auth_matrix(auth_app, row):
    client = auth_app.test_client()
    declared = routes(auth_app)
    outcomes = {}
    for (method, rule), call in good_calls(auth_app, row).items():
        for label, headers, expected in credentials(auth_app, declared[(method, rule)]):
            path, body, success = call()
            response = client.open(path, method=method, json=body, headers=headers)
            outcomes[(method, rule, label)] = (response.status_code, expected or success)
            if response.status_code in (401, 403):
                assert set(response.get_json()) == {"error", "details", "request_id"}
    wrong = {k: v for k, v in outcomes.items() if v[0] != v[1]}
    assert not wrong, wrong
    assert len(outcomes) == 28 * 15


def test_failed_keys_all_get_the_same_body(auth_app):
    client = auth_app.test_client()
    store = auth_app.extensions["agserve.keys"]
    revoked, record = store.create("r", ["model_info"])
    store.revoke(record.id)
    expired, _ = store.create("e", ["model_info"], expires_at=time.time() - 5)
    unknown = "agk_0123456789ab_" + "B" * 43
    bodies = []
    for key in (unknown, revoked, expired, "garbage"):
        response = client.get("/models", headers={"X-API-Key": key})
        body = response.get_json()
        bodies.append((response.status_code, body["error"], body["details"], response.headers["WWW-Authenticate"]))
    assert len(set(map(repr, bodies))) == 1 and bodies[0][0] == 401


def test_keys_are_never_taken_from_the_url(auth_app):
    store = auth_app.extensions["agserve.keys"]
    key, _ = store.create("url", ["model_info"])
    client = auth_app.test_client()
    for parameter in ("api_key", "key", "X-API-Key", "access_token"):
        assert client.get(f"/models?{parameter}={key}").status_code == 401
    assert client.get("/models", headers={"X-API-Key": key}).status_code == 200


def test_both_kinds_of_credential_at_once_are_refused(auth_app):
    key, _ = auth_app.extensions["agserve.keys"].create("both", ["model_info"])
    response = auth_app.test_client().get("/models", headers={"X-API-Key": key,
                                                              "Authorization": f"Bearer {hs_token()}"})
    assert response.status_code == 401


def test_a_route_without_a_decorator_is_closed(auth_app, tmp_path, repository_path):
    from app.auth import undeclared_routes
    from tests.conftest import build_app

    app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary")
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret data")
    key, _ = app.extensions["agserve.keys"].create("all", ["predict", "model_info", "admin"])

    assert undeclared_routes(app) == ["/forgotten"]
    response = app.test_client().get("/forgotten", headers={"X-API-Key": key})
    assert response.status_code == 403 and b"secret data" not in response.data


def test_the_app_refuses_to_start_with_an_undeclared_route(monkeypatch, tmp_path, repository_path):
    from app.api import health
    from tests.conftest import build_app

    monkeypatch.setattr(health.bp, "deferred_functions", list(health.bp.deferred_functions))
    monkeypatch.setattr(health.bp, "_got_registered_once", False)
    health.bp.add_url_rule("/health/debug", "debug_dump", lambda: "internals")
    with pytest.raises(RuntimeError, match="/health/debug"):
        build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary")


def test_stored_keys_are_hashes_only(auth_app):
    store = auth_app.extensions["agserve.keys"]
    key, record = store.create("hash-check", ["predict"])
    path = Path(store.database.engine.url.database)  # the embedded SQLite file
    raw = path.read_bytes() + b"".join(p.read_bytes() for p in path.parent.glob("*-wal"))
    assert key.encode() not in raw and key.split("_", 2)[2].encode() not in raw
    assert record.id.encode() in raw


def test_last_used_time_is_recorded(auth_app):
    store = auth_app.extensions["agserve.keys"]
    key, record = store.create("usage", ["model_info"])
    assert store.get(record.id).last_used_at is None
    auth_app.test_client().get("/models", headers={"X-API-Key": key})
    assert store.get(record.id).last_used_at is not None
