"""Health checks for curl, load balancers and Kubernetes probes; public by design.

In production an anonymous caller learns whether the server is ready, never which models it serves or why one failed
(names, load errors and paths need a credential with the model_info scope); elsewhere everyone sees everything.
"""
from __future__ import annotations

import os

from flask import Blueprint, current_app, jsonify

from app.auth import may_see, public
from app.extensions import served_models
from app.threads import allowed_cpus

bp = Blueprint("health", __name__)


@bp.get("/health")
@public
def health():
    """Health as the original specification defined it: status, model_loaded and the default model's info; 503
    until ready."""
    registry = served_models()
    body = {"status": "healthy" if registry.ready else "unhealthy", "model_loaded": registry.ready,
            "model_info": None}
    if may_see("model_info"):
        body["models"] = registry.status()
        slot = registry.slots.get(registry.default_name)
        if slot is not None and slot.model is not None:
            body["model_info"] = slot.model.info
    if not registry.ready:
        body["reason"] = _not_ready_reason(registry)
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
    body = {"status": "ready" if registry.ready else "not_ready",
            "worker": {"pid": os.getpid(), "thread_pools": current_app.config.get("THREAD_POOLS", []),
                       "cpus": sorted(allowed_cpus())}}
    if may_see("model_info"):
        body["models"] = registry.status()
    if not registry.ready:
        body["reason"] = _not_ready_reason(registry)
        # Counts name nothing, and tell a deploy script that waiting cannot help once a model has failed.
        body["models_failed"] = sum(1 for slot in registry.slots.values() if slot.status == "failed")
    return jsonify(body), 200 if registry.ready else 503


def _not_ready_reason(registry) -> str:
    if may_see("model_info"):
        return registry.not_ready_reason()
    waiting = sum(1 for slot in registry.slots.values() if slot.model is None)
    if not registry.slots:
        return "no model is served"
    return f"{waiting} of {len(registry.slots)} served models not ready (details need the model_info scope)"
