"""GET /metrics for Prometheus (scope `metrics`); the per-request counters are fed by app.api.hooks."""
from __future__ import annotations

from flask import Blueprint, current_app, request

from app import metrics
from app.auth import require_scope
from app.extensions import database, monitor, served_models

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@require_scope("metrics")
def scrape():
    """Prometheus text exposition, summed over every gunicorn worker."""
    found = monitor()
    under_gunicorn = request.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")
    extra = [metrics.ServerCollector(database(), under_gunicorn)]
    if found is not None:
        extra.append(metrics.MonitorCollector(found, served_models()))
    body, content_type = metrics.exposition(current_app.config["METRICS_DIR"], extra)
    return current_app.response_class(body, headers={"Content-Type": content_type})
