"""Administration under /admin, all with the admin scope: API keys, tokens, the audit log, model versions."""
from __future__ import annotations

import re
import time

from flask import Blueprint, current_app, jsonify, request

from app import extensions, status
from app.api import load_body, request_context
from app.auth import audit, require_scope
from app.errors import ApiError
from app.extensions import keystore, served_models, token_service
from app.lifecycle.versions import describe_versions, promote, rollback
from app.schemas import KeyRequest, PromoteRequest, TokenRequest
from app.state.redis import RedisUnavailable
from app.values import parse_duration

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_LIMIT = re.compile(r"[0-9]{1,4}")


def repository():
    return served_models().repository


@bp.post("/keys")
@require_scope("admin")
def create_key():
    """Create an API key; the secret is in this answer only."""
    body = load_body(KeyRequest())
    expires_at = time.time() + parse_duration(body["expires_in"]) if body["expires_in"] else None
    _refuse_outliving_the_token(expires_at)
    key, record = keystore().create(body["owner"], body["scopes"], expires_at)
    audit("key.create", record.id, owner=record.owner, scopes=list(record.scopes), expires_at=expires_at)
    return jsonify({**record.public(), "key": key}), 201


def _refuse_outliving_the_token(expires_at: float | None) -> None:
    """A stolen short-lived token must not be turned into a lasting key (unless AGSERVE_KEYS_MAY_OUTLIVE_TOKEN)."""
    token_expires = request_context().principal.expires_at
    if token_expires is None or current_app.config["KEYS_MAY_OUTLIVE_TOKEN"]:
        return
    if expires_at is None or expires_at > token_expires:
        left = max(0, int(token_expires - time.time()))
        raise ApiError(422, "a key created with a token may not outlive the token",
                       {"expires_in": [f"Must end before the token expires (in {left} s)."]})


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
        token, expires = token_service().issue(body["sub"], body["scopes"], parse_duration(body["ttl"]))
    except LookupError:
        # Configured off, not missing: 409 (the server's set-up conflicts with the request; a 5xx would read as
        # a server failure to clients and monitors) with how to turn it on.
        raise ApiError(409, "token issuing is off: no HS256 secret is configured (set AGSERVE_JWT_SECRET, at least "
                            "32 bytes, or add an HS256 key to AGSERVE_JWT_JWKS_FILE)") from None
    audit("token.issue", body["sub"], scopes=body["scopes"], expires_at=expires)
    return jsonify({"token": token, "token_type": "Bearer", "expires_at": expires}), 201


@bp.get("/audit")
@require_scope("admin")
def audit_log():
    """The newest admin actions first (?limit=, 1 to 1000, default 100)."""
    text = request.args.get("limit", "100").strip()
    if not AUDIT_LIMIT.fullmatch(text) or not 1 <= int(text) <= 1000:  # refused, never silently clamped
        raise ApiError(422, "limit must be an integer from 1 to 1000", {"limit": ["Not an integer from 1 to 1000."]})
    return jsonify({"entries": keystore().audit_log(int(text))})


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
    cache = extensions.cache()
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
