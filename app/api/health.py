"""Health checks for curl, load balancers and Kubernetes probes; public by design."""
from __future__ import annotations

import os

from flask import Blueprint, current_app, jsonify

from app.api import served_models
from app.auth import public

bp = Blueprint("health", __name__)


@bp.get("/health")
@public
def health():
    """Seed-compatible health: status, model_loaded and the default model's info; 503 until ready."""
    registry = served_models()
    body = {"status": "healthy" if registry.ready else "unhealthy", "model_loaded": registry.ready,
            "model_info": None, "models": registry.status()}
    slot = registry.slots.get(registry.default_name)
    if slot is not None and slot.model is not None:
        body["model_info"] = slot.model.info
    if not registry.ready:
        body["reason"] = registry.not_ready_reason()
    return jsonify(body), 200 if registry.ready else 503


@bp.get("/health/live")
@public
def live():
    """Liveness: the process answers (does not depend on the models)."""
    return jsonify({"status": "alive"})


@bp.get("/health/ready")
@public
def ready():
    """Readiness: every served model is loaded and warmed up in this worker."""
    registry = served_models()
    body = {"status": "ready" if registry.ready else "not_ready", "models": registry.status(),
            "worker": {"pid": os.getpid(), "thread_pools": current_app.config.get("THREAD_POOLS", [])}}
    if not registry.ready:
        body["reason"] = registry.not_ready_reason()
    return jsonify(body), 200 if registry.ready else 503
