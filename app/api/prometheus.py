"""GET /metrics for Prometheus (scope `metrics`); the per-request counters are fed by app.api.hooks."""
from __future__ import annotations

from flask import Blueprint, current_app

from app import metrics
from app.auth import require_scope
from app.extensions import monitor, served_models

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@require_scope("metrics")
def scrape():
    """Prometheus text exposition, summed over every gunicorn worker."""
    found = monitor()
    extra = [metrics.MonitorCollector(found, served_models())] if found is not None else []
    body, content_type = metrics.exposition(current_app.config["METRICS_DIR"], extra)
    return current_app.response_class(body, headers={"Content-Type": content_type})
