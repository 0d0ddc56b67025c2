"""Explanations: POST /explain (default model) and POST /models/<name>/explain.

The same bodies as prediction (records, split orientation, CSV); the answer gives, per row, the prediction, the
base value and one contribution per input feature. `Accept: image/svg+xml` on a one-row request draws a waterfall.
"""
from __future__ import annotations

import re
from xml.sax.saxutils import escape

from flask import Blueprint, current_app, jsonify, request

from app.api import decode_rows, request_context
from app.auth import require_scope
from app.codecs import json_rows
from app.errors import ApiError
from app.extensions import data_plane
from app.inference import explain

bp = Blueprint("explain", __name__)
JSON, SVG = "application/json", "image/svg+xml"
TOP = re.compile(r"[0-9]{1,5}")
TOP_MAX = 10_000  # far above any model's feature count; keeps the parameter bounded like every other


@bp.post("/explain")
@require_scope("explain")
def explain_default():
    """Explain rows predicted by the default model: base value and one contribution per input feature."""
    return _explain(None)


@bp.post("/models/<name>/explain")
@require_scope("explain")
def explain_named(name: str):
    """Explain rows predicted by the named model."""
    return _explain(name)


def _explain(name: str | None):
    """Decode → data plane → encode, as predictions (the same bodies), with an SVG answer for one row."""
    plane, context = data_plane(), request_context()
    model = plane.resolve(name, context)
    all_classes, top = _options()
    answer_type = request.accept_mimetypes.best_match([JSON, SVG], default=JSON)
    table = decode_rows(model, current_app.config["EXPLAIN_MAX_ROWS"])
    if answer_type == SVG and table.n != 1:
        raise ApiError(422, "an SVG waterfall explains exactly one row", {"rows": table.n})
    permutations = current_app.config["EXPLAIN_PERMUTATIONS"]
    full = plane.explain(name, table, context, permutations)
    rows = [explain.shape(model, row, all_classes, top) for row in full]
    if answer_type == SVG:
        response = current_app.response_class(waterfall(model.name, rows[0]), mimetype=SVG)
        response.headers["X-Model-Name"], response.headers["X-Model-Version"] = model.name, model.version
        return response
    return jsonify(json_rows.answer(model, context, explanations=rows, method={
        "name": "permutation Shapley values (antithetic)", "permutations": permutations,
        "background_rows": model.manifest["background"]["rows"]}))


def _options() -> tuple[bool, int | None]:
    classes = request.args.get("classes", "predicted")
    if classes not in ("predicted", "all"):
        raise ApiError(422, "classes must be 'predicted' or 'all'", {"classes": ["Must be one of: predicted, all."]})
    top = request.args.get("top")
    if top is None:
        return classes == "all", None
    # ASCII digits only: str.isdigit() also admits '²', which int() refuses, and long digit strings are refused by int()
    if not TOP.fullmatch(top) or not 1 <= int(top) <= TOP_MAX:
        raise ApiError(422, f"top must be an integer from 1 to {TOP_MAX}",
                       {"top": [f"Not an integer from 1 to {TOP_MAX}."]})
    return classes == "all", int(top)


# --- the OpenAPI description (app/api/docs.py) --------------------------------------------------------------------

METHOD = ("Contributions are Shapley values over the input features as sent (a date or text column is one feature), "
          "estimated by antithetic permutation sampling against a background sample of the reference data stored "
          "with the model version: base_value (the mean output over the background) + Σ contributions = output_value "
          "(a class probability, a quantile, or the regression value) exactly, up to float rounding. They are "
          "seeded by model version and row, so repeatable and cached. They describe the model's output relative to "
          "the background, not the world: they are not causal, depend on the background chosen, and split the "
          "credit of correlated features in ways that can look arbitrary (masking treats features as independent). "
          "`Accept: image/svg+xml` on a one-row request returns a waterfall chart.")
PARAMETERS = [
    {"name": "classes", "in": "query", "required": False, "description": "Explain the predicted class (default) or "
     "every class (classifiers only).", "schema": {"type": "string", "enum": ["predicted", "all"]}},
    {"name": "top", "in": "query", "required": False, "description": "Keep the k largest contributions by magnitude "
     "and sum the others into `rest`.", "schema": {"type": "integer", "minimum": 1, "maximum": TOP_MAX}},
]
_NUMBER = {"type": "number"}
EXPLANATION_SCHEMA = {"type": "object", "required": ["explanations", "method", "model_info", "request_id"],
                      "properties": {
    "explanations": {"type": "array", "items": {"type": "object", "required": ["prediction", "explanations"],
                                                 "properties": {
        "prediction": {"description": "As POST /predict answers it."},
        "probabilities": {"type": "object", "additionalProperties": _NUMBER},
        "explanations": {"type": "array", "items": {"type": "object", "properties": {
            "output": {"type": "string", "nullable": True,
                       "description": "The class or quantile level explained; null for a regression value."},
            "kind": {"type": "string", "enum": ["probability", "quantile", "value"]},
            "base_value": {**_NUMBER, "description": "The mean output over the background sample."},
            "output_value": {**_NUMBER, "description": "The model's output for this row: base_value + Σ."},
            "contributions": {"type": "array", "items": {"type": "object", "properties": {
                "feature": {"type": "string"}, "value": {"description": "The row's value of the feature."},
                "contribution": _NUMBER}}},
            "rest": {"type": "object", "description": "With ?top: the other features, summed.",
                     "properties": {"features": {"type": "integer"}, "contribution": _NUMBER}}}}}}}},
    "method": {"type": "object"}, "model_info": {"type": "object"}, "timestamp": {"type": "string"},
    "request_id": {"type": "string"}}}


# --- the waterfall picture ---------------------------------------------------------------------------------------

WIDTH, LABEL_WIDTH, ROW_HEIGHT, MARGIN, NUMBERS = 760, 300, 24, 16, 70  # NUMBERS: room for the last figure


def waterfall(model_name: str, row: dict) -> str:
    """A hand-written SVG: per explained output, a bar per feature from the running total, base to output."""
    panels, y = [], MARGIN
    for explanation in row["explanations"]:
        panel, y = _panel(explanation, y)
        panels.append(panel)
    title = escape(f"{model_name}: why {row['prediction']}")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + MARGIN}" '
            f'viewBox="0 0 {WIDTH} {y + MARGIN}" font-family="sans-serif" font-size="12">'
            f'<title>{title}</title><rect width="100%" height="100%" fill="white"/>{"".join(panels)}</svg>')


def _panel(explanation: dict, top: int) -> tuple[str, int]:
    steps = [(f"{c['feature']} = {_shown(c['value'])}", c["contribution"]) for c in explanation["contributions"]]
    if "rest" in explanation:
        steps.append((f"{explanation['rest']['features']} other features", explanation["rest"]["contribution"]))
    base, output = explanation["base_value"], explanation["output_value"]
    totals = [base]
    for _, amount in steps:
        totals.append(totals[-1] + amount)
    low, high = min(totals + [output]), max(totals + [output])
    span = (high - low) or 1.0
    plot = WIDTH - LABEL_WIDTH - 2 * MARGIN - NUMBERS

    def x(value: float) -> float:
        return round(LABEL_WIDTH + MARGIN + (value - low) / span * plot, 2)

    name = "predicted value" if explanation["output"] is None else \
        f"{explanation['kind']} of {explanation['output']}"
    parts = [f'<text x="{MARGIN}" y="{top + 14}" font-weight="bold">{escape(name)}</text>']
    y = top + ROW_HEIGHT
    parts.append(_line(y, "base value", base, x(base), "#555"))
    y += ROW_HEIGHT
    for (label, amount), before in zip(steps, totals):
        left, right = sorted((x(before), x(before + amount)))
        colour = "#d62728" if amount >= 0 else "#1f77b4"
        parts.append(f'<text x="{LABEL_WIDTH}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{left}" y="{y + 4}" width="{max(right - left, 1)}" height="{ROW_HEIGHT - 8}" '
                     f'fill="{colour}"/><text x="{right + 4}" y="{y + 15}">{amount:+.4g}</text>')
        y += ROW_HEIGHT
    parts.append(_line(y, "output", output, x(output), "#000"))
    return "".join(parts), y + ROW_HEIGHT + MARGIN


def _line(y: int, label: str, value: float, at: float, colour: str) -> str:
    return (f'<text x="{LABEL_WIDTH}" y="{y + 15}" text-anchor="end" font-weight="bold">{label}</text>'
            f'<line x1="{at}" y1="{y + 2}" x2="{at}" y2="{y + ROW_HEIGHT - 2}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{at + 6}" y="{y + 15}">{value:.4g}</text>')


def _shown(value) -> str:
    text = "missing" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 28 else text[:27] + "…"
