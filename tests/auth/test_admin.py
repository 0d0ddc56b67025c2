"""Admin API: keys, audit log, scope enforcement; production start-up safety."""
from __future__ import annotations

import secrets
import subprocess
import time

import pytest
import requests

from app.config import ConfigError, load_settings
from tests.support.routes import good_calls, routes
from tests.support.apps import build_app
from tests.support.data import FEATURES, to_records
from tests.support.servers import BIN, ROOT, eventually, free_port, gunicorn, server_env


@pytest.fixture(scope="module")
def row(dataset):
    return to_records(dataset[1][FEATURES].head(1))[0]


def test_a_predict_key_on_every_admin_route_is_403_and_leaves_no_trace(auth_app, row):
    store = auth_app.extensions["agserve.keys"]
    predict_key, _ = store.create("app", ["predict", "model_info"])
    admin_routes = {route: call for route, call in good_calls(auth_app, row).items()
                    if routes(auth_app)[route] == "admin"}
    assert len(admin_routes) == 13
    client = auth_app.test_client()
    for (method, _), call in admin_routes.items():
        path, body, _ = call()
        before_audit, before_keys = store.audit_log(1000), [(k.id, k.revoked_at) for k in store.list()]
        response = client.open(path, method=method, json=body, headers={"X-API-Key": predict_key})
        assert response.status_code == 403, (method, path)
        assert store.audit_log(1000) == before_audit
        assert [(k.id, k.revoked_at) for k in store.list()] == before_keys


def test_admin_key_lifecycle_is_audited(auth_app):
    store = auth_app.extensions["agserve.keys"]
    admin, admin_record = store.create("ops", ["admin"])
    client = auth_app.test_client()
    headers = {"X-API-Key": admin, "X-Forwarded-For": "10.9.9.9"}

    created = client.post("/admin/keys", json={"owner": "billing", "scopes": ["predict"], "expires_in": "30d"},
                          headers=headers)
    body = created.get_json()
    assert created.status_code == 201 and body["key"].startswith("agk_") and body["expires_at"]
    listed = client.get("/admin/keys", headers=headers).get_json()["keys"]
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "hash" not in k for k in listed)
    assert client.post("/predict", json={"data": [{}]}, headers={"X-API-Key": body["key"]}).status_code == 422

    revoked = client.delete(f"/admin/keys/{body['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert client.post("/predict", json={"data": [{}]}, headers={"X-API-Key": body["key"]}).status_code == 401
    assert client.delete("/admin/keys/ffffffffffff", headers=headers).status_code == 404

    entries = client.get("/admin/audit?limit=5", headers=headers).get_json()["entries"]
    assert [(e["action"], e["target"]) for e in entries[:2]] == [("key.revoke", body["id"]),
                                                                  ("key.create", body["id"])]
    assert all(e["actor"] == f"key:{admin_record.id}" and e["source"] == "127.0.0.1" and e["at"]
               for e in entries[:2])


@pytest.mark.parametrize("payload", [
    {"owner": "x", "scopes": ["root"]}, {"owner": "", "scopes": ["predict"]}, {"owner": "x", "scopes": []},
    {"owner": "x", "scopes": ["predict"], "expires_in": "forever"}, {"owner": "x", "scopes": ["predict"], "x": 1},
])
def test_bad_key_requests_are_422(auth_app, payload):
    admin, _ = auth_app.extensions["agserve.keys"].create("ops", ["admin"])
    response = auth_app.test_client().post("/admin/keys", json=payload, headers={"X-API-Key": admin})
    assert response.status_code == 422 and set(response.get_json()) == {"error", "details", "request_id"}


def test_the_audit_log_survives_a_restart(tmp_path, repository_path):
    first = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary")
    admin, _ = first.extensions["agserve.keys"].create("ops", ["admin"])
    first.test_client().post("/admin/keys", json={"owner": "a", "scopes": ["predict"]}, headers={"X-API-Key": admin})
    second = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary",
                       LOAD_MODELS_ON_START=False)
    entries = second.test_client().get("/admin/audit", headers={"X-API-Key": admin}).get_json()["entries"]
    assert [e["action"] for e in entries] == ["key.create"]


PEPPER = secrets.token_urlsafe(32)


@pytest.mark.parametrize("environ, says", [
    ({"AGSERVE_KEY_PEPPER": PEPPER}, "production needs authentication"),
    ({"AGSERVE_JWT_SECRET": "s" * 40, "AGSERVE_DEBUG": "true"}, "AGSERVE_DEBUG must be off in production"),
    ({"AGSERVE_JWT_SECRET": "too-short"}, "AGSERVE_JWT_SECRET must be at least 32 bytes"),
    ({"AGSERVE_JWT_SECRET": secrets.token_urlsafe(32)}, "production needs AGSERVE_KEY_PEPPER"),
    ({"AGSERVE_KEY_PEPPER": "replace-with-a-long-random-string"}, "AGSERVE_KEY_PEPPER is a placeholder from a template"),
    ({"AGSERVE_KEY_PEPPER": PEPPER, "AGSERVE_JWT_SECRET": "s" * 40}, "AGSERVE_JWT_SECRET has too little entropy"),
])
def test_production_start_up_refuses_unsafe_settings_with_one_line(tmp_path, environ, says):
    env = server_env(AGSERVE_ENV="production", AGSERVE_BIND=f"127.0.0.1:{free_port()}",
                     AGSERVE_MODEL_REPOSITORY=str(tmp_path), AGSERVE_AUTH_DB=str(tmp_path / "auth.db"), **environ)
    result = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and says in lines[0], result.stderr


def test_production_starts_once_a_key_exists(tmp_path):
    from app.auth import check_startup
    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    settings = load_settings(environ={"AGSERVE_ENV": "production", "AGSERVE_AUTH_DB": str(tmp_path / "a.db"),
                                      "AGSERVE_KEY_PEPPER": PEPPER})
    with pytest.raises(ConfigError):
        check_startup(settings)
    KeyStore(sqlite_file(tmp_path / "a.db"), PEPPER).create("ops", ["admin"])
    check_startup(settings)


@pytest.mark.server
def test_revocation_reaches_both_workers_within_a_second(repository_path, row):
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary") as server:
        created = server.session().post(f"{server.base}/admin/keys",
                                        json={"owner": "doomed", "scopes": ["predict"]}, timeout=10).json()
        doomed = {"X-API-Key": created["key"], "Connection": "close"}
        pids = server.worker_pids()
        assert len(pids) == 2

        def predict_on(pid):
            with server.only_worker(pid):
                assert requests.get(f"{server.base}/health/ready", headers={"Connection": "close"},
                                    timeout=10).json()["worker"]["pid"] == pid
                return requests.post(f"{server.base}/predict", json={"data": [row]}, headers=doomed,
                                     timeout=10).status_code

        assert [predict_on(pid) for pid in pids] == [200, 200]
        assert server.session().delete(f"{server.base}/admin/keys/{created['id']}", timeout=10).status_code == 200
        revoked_at = time.monotonic()
        # Workers trust a verified key for at most AGSERVE_KEY_CACHE_SECONDS (0.5 s) after the database confirmed it.
        assert eventually(lambda: [predict_on(pid) for pid in pids] == [401, 401], 1.0, step=0.02)
        assert time.monotonic() - revoked_at < 1.0
        time.sleep(1.0)
        assert [predict_on(pid) for pid in pids] == [401, 401]  # and it stays refused
