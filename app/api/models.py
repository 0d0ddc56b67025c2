"""Model metadata: what is served, each model's manifest facts and its input schema."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from app.auth import require_scope
from app.extensions import served_models
from app.inference.served import ServedModel

bp = Blueprint("models", __name__)


@bp.get("/models")
@require_scope("model_info")
def list_models():
    """The served models with their versions and states; which one is the default."""
    registry = served_models()
    return jsonify({"default": registry.default_name or None, "models": registry.status()})


@bp.get("/model/info")
@require_scope("model_info")
def default_model_info():
    """Metadata of the default model (GET /model/info of the original specification's contract)."""
    return jsonify({**describe(served_models().get(None)), "limits": limits()})


@bp.get("/models/<name>")
@require_scope("model_info")
def model_info(name: str):
    """Metadata of a served model: problem, features, validation scores, stored feature importance."""
    return jsonify({**describe(served_models().get(name)), "limits": limits()})


@bp.get("/models/<name>/schema")
@require_scope("model_info")
def model_schema(name: str):
    """The JSON Schema a row must satisfy, generated from the model's feature spec."""
    model = served_models().get(name)
    return jsonify({"name": model.name, "version": model.version, "row": model.spec.json_schema()})


def limits() -> dict[str, int]:
    """What one request may hold, so clients can chunk before the server refuses (413)."""
    config = current_app.config
    return {"max_rows": config["MAX_ROWS"], "max_body_bytes": config["MAX_BODY_BYTES"],
            "explain_max_rows": config["EXPLAIN_MAX_ROWS"]}


def describe(model: ServedModel) -> dict[str, Any]:
    manifest = model.manifest
    reference = manifest.get("reference") or {}
    return {
        **model.info,
        "label": manifest["label"],
        "class_labels": manifest["class_labels"],
        "positive_class": manifest["positive_class"],
        "quantile_levels": manifest["quantile_levels"],
        "model_best": manifest["model_best"],
        "features": [{"name": f["name"], "kind": f["kind"]} for f in manifest["features"]],
        "versions": manifest["versions"],
        "imported_at": manifest["imported_at"],
        "validation_scores": reference.get("scores"),
        "feature_importance": reference.get("feature_importance"),
        "sample_row": reference.get("sample_row"),
    }
