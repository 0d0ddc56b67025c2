"""The auth matrix on every protected route: none, malformed, wrong, revoked, expired, wrong scope, good."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.routes import PUBLIC, good_calls, routes
from tests.support.tokens import hs_token
from tests.support.data import FEATURES, to_records


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
    from tests.support.apps import build_app

    app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary")
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret data")
    key, _ = app.extensions["agserve.keys"].create("all", ["predict", "model_info", "admin"])

    assert undeclared_routes(app) == ["/forgotten"]
    response = app.test_client().get("/forgotten", headers={"X-API-Key": key})
    assert response.status_code == 403 and b"secret data" not in response.data


def test_the_app_refuses_to_start_with_an_undeclared_route(monkeypatch, tmp_path, repository_path):
    from app.api import health
    from tests.support.apps import build_app

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
