"""Every route of an app with its declared access, and one successful call of each protected route."""
from __future__ import annotations

from app.auth import ACCESS

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
