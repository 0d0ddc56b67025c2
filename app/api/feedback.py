"""Monitoring routes: POST /feedback (scope predict); drift, live quality and alerts under /admin (scope admin)."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify
from marshmallow import ValidationError

from app import extensions
from app.api import read_json, request_context
from app.auth import require_scope
from app.db import DatabaseUnavailable
from app.errors import ApiError
from app.extensions import served_models
from app.monitoring.quality import BadOutcome, parse_actual
from app.schemas import FeedbackBatch, FeedbackItem, messages_of

bp = Blueprint("monitoring", __name__)
log = logging.getLogger("agserve.monitoring")


def monitor():
    found = extensions.monitor()
    if found is None:
        raise ApiError(404, "monitoring is off on this server (AGSERVE_MONITORING=false)")
    return found


@bp.post("/feedback")
@require_scope("predict")
def feedback():
    """Outcomes for answered predictions: one {prediction_id | request_id, actual}, or {"feedback": [...]}.
    All are stored, or none (404 for ids with no answered prediction, 422 for values the model cannot have)."""
    items = _feedback_items(read_json())
    found = monitor().find_predictions({item["request_id"] for item in items})
    outcomes, errors = [], {}
    manifests: dict[tuple[str, str], dict[str, Any]] = {}
    for index, item in enumerate(items):
        prediction = found.get(item["request_id"])
        if prediction is None:
            errors[str(index)] = {"id": ["No answered prediction with this id: unknown, past its retention, or "
                                         "answered too recently to be recorded yet (retry in a few seconds)."]}
            continue
        key = (prediction["model"], prediction["version"])
        if key not in manifests:
            manifests[key] = served_models().repository.get(*key).manifest()
        try:
            outcomes += _outcomes(item, prediction, manifests[key])
        except BadOutcome as exc:
            errors[str(index)] = {"actual": [str(exc)]}
    if errors:
        unknown_only = all("id" in e for e in errors.values())
        raise ApiError(404 if unknown_only else 422, "feedback refused; nothing was stored", {"items": errors})
    try:
        monitor().record_outcomes(outcomes)
    except DatabaseUnavailable:  # unreachable, disk full, or locked past its timeout: the cause stays in the log
        log.exception("feedback could not be stored")
        raise ApiError(503, "the monitoring store cannot be written now; nothing was stored, retry later") from None
    context = request_context()
    context.rows = len(outcomes)
    return jsonify({"accepted": len(outcomes), "prediction_ids": [o[0] for o in outcomes],
                    "request_id": context.request_id})


def _feedback_items(document: Any) -> list[dict[str, Any]]:
    """Validated items, each with its request_id and row (None: every row of that request)."""
    batch = isinstance(document, dict) and "feedback" in document
    limit = current_app.config["MAX_ROWS"]
    if batch and isinstance(document["feedback"], list) and len(document["feedback"]) > limit:  # before any item
        count = len(document["feedback"])
        raise ApiError(413, f"too many feedback items: {count} (at most {limit})", {"max_rows": limit})
    try:
        items = FeedbackBatch().load(document)["feedback"] if batch else [FeedbackItem().load(document)]
    except ValidationError as exc:
        raise ApiError(422, "feedback does not match the schema", messages_of(exc)) from None
    for item in items:
        if "prediction_id" in item:
            request_id, _, row = item["prediction_id"].rpartition(":")
            item["request_id"], item["row"] = request_id, int(row)
        else:
            item["row"] = None
    return items


def _outcomes(item: dict[str, Any], prediction: dict[str, Any], manifest: dict[str, Any]) -> list[tuple]:
    """(prediction_id, request_id, row, model, version, actual) for each row the item speaks of."""
    rows, request_id = prediction["rows"], item["request_id"]
    if item["row"] is not None:
        if item["row"] >= rows:
            raise BadOutcome(f"request {request_id} had {rows} rows: row {item['row']} does not exist")
        pairs = [(item["row"], item["actual"])]
    elif rows == 1 and not isinstance(item["actual"], list):
        pairs = [(0, item["actual"])]
    elif isinstance(item["actual"], list) and len(item["actual"]) == rows:
        pairs = list(enumerate(item["actual"]))
    else:
        raise BadOutcome(f"request {request_id} had {rows} rows: send a list of {rows} values, "
                         f"or use prediction_id {request_id}:<row>")
    at = monitor().clock()
    return [(f"{request_id}:{row}", request_id, row, prediction["model"], prediction["version"], at,
             parse_actual(manifest, actual)) for row, actual in pairs]


@bp.get("/admin/models/<name>/drift")
@require_scope("admin")
def drift(name: str):
    """Per-feature drift of recent inputs (every worker's) against the served version's reference statistics."""
    return jsonify(monitor().drift(served_models().get(name)))


@bp.get("/admin/models/<name>/quality")
@require_scope("admin")
def quality(name: str):
    """The live metric from feedback over the quality window, next to the validation score in the manifest."""
    return jsonify(monitor().quality(served_models().get(name)))


@bp.get("/admin/alerts")
@require_scope("admin")
def alerts():
    """Rules, conditions firing now, the newest alert events, and which worker evaluates."""
    found = monitor()
    rules = [vars(rule) for rule in found.alert_config.rules] if found.alert_config else []
    return jsonify({"rules": rules, "channels": sorted(found.alert_config.channels) if found.alert_config else [],
                    **found.store.alerts()})
