"""Predictions: POST /predict (the seed's contract, default model) and POST /models/<name>/predict."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, current_app, g, jsonify

from app.api import read_json, served_models
from app.auth import require_scope
from app.errors import ApiError

bp = Blueprint("prediction", __name__)


@bp.post("/predict")
@require_scope("predict")
def predict_default():
    """Predict rows with the default model: {"data": [{feature: value, ...}, ...]}."""
    return _predict(None)


@bp.post("/models/<name>/predict")
@require_scope("predict")
def predict_named(name: str):
    """Predict rows with the named model."""
    return _predict(name)


def _predict(name: str | None):
    model = served_models().get(name)
    g.model, g.version = model.name, model.version
    rows = read_rows(current_app.config["MAX_ROWS"])
    g.rows = len(rows)
    result = model.predict(rows)
    return jsonify({
        "predictions": result.predictions,
        "probabilities": result.probabilities,
        "model_info": model.info,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": g.request_id,
    })


def read_rows(max_rows: int) -> list[Any]:
    """The rows of a JSON body {"data": [...]}, refusing bad bodies before any row is validated."""
    document = read_json()
    if not isinstance(document, dict) or "data" not in document:
        raise ApiError(422, 'request body must be a JSON object with a "data" list of rows',
                       {"data": ["Missing data for required field."]})
    unknown = sorted(set(document) - {"data"})
    if unknown:
        raise ApiError(422, "request body has unknown keys", {k: ["Unknown field."] for k in unknown})
    rows = document["data"]
    if not isinstance(rows, list):
        raise ApiError(422, '"data" must be a list of rows', {"data": ["Not a valid list."]})
    if not rows:
        raise ApiError(422, '"data" must hold at least one row', {"data": ["Shorter than minimum length 1."]})
    if len(rows) > max_rows:
        raise ApiError(413, f"too many rows: {len(rows)} (at most {max_rows})",
                       {"rows": len(rows), "max_rows": max_rows})
    return rows
