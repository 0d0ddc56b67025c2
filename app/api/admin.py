"""Administration under /admin, all with the admin scope: API keys, tokens, the audit log, model versions."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from app import status
from app.api import load_body, served_models
from app.auth import audit, keystore, require_scope, tokens
from app.auth.keys import parse_duration
from app.errors import ApiError
from app.lifecycle.versions import describe_versions, promote, rollback
from app.schemas import KeyRequest, PromoteRequest, TokenRequest
from app.state.redis import RedisUnavailable

bp = Blueprint("admin", __name__, url_prefix="/admin")


def repository():
    return served_models().repository


@bp.post("/keys")
@require_scope("admin")
def create_key():
    """Create an API key; the secret is in this answer only."""
    body = load_body(KeyRequest())
    expires_at = time.time() + parse_duration(body["expires_in"]) if body["expires_in"] else None
    key, record = keystore().create(body["owner"], body["scopes"], expires_at)
    audit("key.create", record.id, owner=record.owner, scopes=list(record.scopes), expires_at=expires_at)
    return jsonify({**record.public(), "key": key}), 201


@bp.get("/keys")
@require_scope("admin")
def list_keys():
    """List API keys (never their secrets)."""
    return jsonify({"keys": [record.public() for record in keystore().list()]})


@bp.delete("/keys/<key_id>")
@require_scope("admin")
def revoke_key(key_id: str):
    """Revoke an API key; every worker refuses it from the next request on."""
    record = keystore().revoke(key_id)
    if record is None:
        raise ApiError(404, f"no API key {key_id!r}")
    audit("key.revoke", key_id)
    return jsonify(record.public())


@bp.post("/tokens")
@require_scope("admin")
def issue_token():
    """Issue a short-lived HS256 JWT (only when an HS256 secret is configured)."""
    body = load_body(TokenRequest())
    try:
        token, expires = tokens().issue(body["sub"], body["scopes"], parse_duration(body["ttl"]))
    except LookupError:
        raise ApiError(404, "token issuing is off: no HS256 secret is configured") from None
    audit("token.issue", body["sub"], scopes=body["scopes"], expires_at=expires)
    return jsonify({"token": token, "token_type": "Bearer", "expires_at": expires}), 201


@bp.get("/audit")
@require_scope("admin")
def audit_log():
    """The newest admin actions first (?limit=, at most 1000)."""
    try:
        limit = min(max(int(request.args.get("limit", 100)), 1), 1000)
    except ValueError:
        raise ApiError(422, "limit must be an integer", {"limit": ["Not a valid integer."]}) from None
    return jsonify({"entries": keystore().audit_log(limit)})


@bp.get("/models/<name>/versions")
@require_scope("admin")
def model_versions(name: str):
    """Every version of a model: active, history, validation state, what this worker and every replica serve."""
    body = describe_versions(repository(), name)
    slot = served_models().slots.get(name)
    body["serving"] = slot.describe() if slot else None
    body["replicas"] = served_models().report.fleet(name)
    body["events"] = repository().activations.events(name)
    return jsonify(body)


@bp.post("/models/<name>/promote")
@require_scope("admin")
def promote_version(name: str):
    """Make a validated version active ({"version", "force"}); every replica switches within the reload interval."""
    body = load_body(PromoteRequest())
    result = promote(repository(), name, body["version"], body["force"])
    audit("model.promote", f"{name}/{body['version']}", **result)
    return jsonify(result)


@bp.post("/models/<name>/rollback")
@require_scope("admin")
def rollback_version(name: str):
    """Return to the version active before the current one."""
    result = rollback(repository(), name)
    audit("model.rollback", f"{name}/{result['active']}", **result)
    return jsonify(result)


@bp.delete("/cache")
@require_scope("admin")
def clear_cache():
    """Empty the prediction cache (every worker; with Redis, every replica)."""
    cache = current_app.extensions.get("agserve.cache")
    if cache is None:
        raise ApiError(404, "the prediction cache is off (AGSERVE_CACHE=false)")
    try:
        cleared = cache.clear()
    except RedisUnavailable:
        raise ApiError(503, "redis is unavailable: the cache was not cleared; retry shortly") from None
    audit("cache.clear", None, rows=cleared)
    return jsonify({"cleared_rows": cleared, "shared": cache.shared})


@bp.get("/status")
@require_scope("admin")
def server_status():
    """CPU, memory and disk of the master and every worker, uptime, requests served, and this worker's models."""
    return jsonify(status.collect(current_app.config, served_models(), request.environ.get("SERVER_SOFTWARE", "")))
