"""GET /metrics for Prometheus (scope `metrics`), and the per-request counters every route feeds."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, g, request

from app import metrics
from app.api import served_models
from app.auth import require_scope

bp = Blueprint("metrics", __name__)


@bp.after_app_request
def _count(response):
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    model, version = g.get("model") or "", g.get("version") or ""
    metrics.REQUESTS.labels(route, model, version, str(response.status_code)).inc()
    started = g.get("started")  # set for every request by app.logs
    if started is not None:
        seconds = time.perf_counter() - started
        metrics.REQUEST_SECONDS.labels(route).observe(seconds)
        monitor = current_app.extensions.get("agserve.monitor")
        if monitor is not None:  # error rate and latency over sliding windows, for alert rules
            monitor.collector.observe_request(model, response.status_code, seconds)
    if response.status_code == 422 and model:
        metrics.VALIDATION_FAILURES.labels(model).inc()
    return response


@bp.get("/metrics")
@require_scope("metrics")
def scrape():
    """Prometheus text exposition, summed over every gunicorn worker."""
    monitor = current_app.extensions.get("agserve.monitor")
    under_gunicorn = request.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn")
    extra = [metrics.ServerCollector(current_app.extensions["agserve.db"], under_gunicorn)]
    if monitor is not None:
        extra.append(metrics.MonitorCollector(monitor, served_models()))
    body, content_type = metrics.exposition(current_app.config["METRICS_DIR"], extra)
    return current_app.response_class(body, headers={"Content-Type": content_type})
