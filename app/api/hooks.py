"""The request hooks, all in one place: a RequestContext for every request (its id, from X-Request-ID when safe, and
its start time) and, with tracing on, its server span; then, after the view, the Prometheus counters, the monitor's
traffic windows and the access log line, all read from that context."""
from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request

from app import metrics
from app.extensions import monitor, tracer
from app.inference.dataplane import RequestContext

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("agserve.access")


def init_app(app: Flask) -> None:
    app.before_request(start_request)
    if tracer(app) is not None:  # registered only when tracing is on: without it, requests pay nothing for it
        app.before_request(start_trace)
        app.after_request(finish_trace)
    app.after_request(finish_request)


def start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.context = RequestContext(incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex)


def start_trace() -> None:
    """The server span, a child of the caller's `traceparent` when it sent a valid one (before auth, so refusals
    are traced too)."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    g.context.trace = tracer().start_request(
        request.headers, f"{request.method} {rule}" if rule else request.method, g.context,
        {"http.request.method": request.method, "url.path": request.path, **({"http.route": rule} if rule else {})})


def finish_trace(response):
    g.context.trace.finish(response.status_code, response.headers)
    return response


def finish_request(response):
    context: RequestContext = g.context
    seconds = time.perf_counter() - context.started
    _count(response.status_code, context, seconds)
    response.headers[REQUEST_ID_HEADER] = context.request_id
    principal = context.principal
    access_log.info("request", extra={
        "method": request.method, "path": request.path, "status": response.status_code,
        "latency_ms": round(seconds * 1000, 2), "model": context.model, "version": context.version,
        "rows": context.rows,
        "client": principal.name if principal else None,  # key id or JWT subject, never a secret
        "remote_addr": request.remote_addr,  # the real client's behind AGSERVE_TRUSTED_PROXIES proxies
    })
    return response


def _count(status: int, context: RequestContext, seconds: float) -> None:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    model, version = context.model or "", context.version or ""
    metrics.REQUESTS.labels(route, model, version, str(status)).inc()
    metrics.REQUEST_SECONDS.labels(route).observe(seconds)
    found = monitor()
    if found is not None:  # error rate and latency over sliding windows, for alert rules
        found.collector.observe_request(model, status, seconds)
    if status == 422 and model:
        metrics.VALIDATION_FAILURES.labels(model).inc()
