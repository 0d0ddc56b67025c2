"""Predictions: POST /predict (the default model) and POST /models/<name>/predict.

Bodies: JSON records {"data": [{...}]}, the pandas split orientation {"data": {"columns": [...], "data": [[...]]}},
or text/csv with a header row. Answers: JSON, or CSV when the client sends Accept: text/csv.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from app.api import decode_rows, request_context
from app.auth import require_scope
from app.codecs import csv_rows, json_rows
from app.codecs.envelope import CSV, JSON
from app.extensions import data_plane

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
    """Decode → data plane → encode."""
    plane, context = data_plane(), request_context()
    model = plane.resolve(name, context)
    answer_type = request.accept_mimetypes.best_match([JSON, CSV], default=JSON)
    table = decode_rows(model, current_app.config["MAX_ROWS"])
    result = plane.infer(name, table, context)
    if answer_type == CSV:
        response = current_app.response_class(csv_rows.encode(result), mimetype=CSV)
        response.headers["X-Model-Name"], response.headers["X-Model-Version"] = model.name, model.version
        return response
    return jsonify(json_rows.answer(model, context, predictions=result.predictions,
                                    probabilities=result.probabilities_json()))
