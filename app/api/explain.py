"""Explanations: POST /explain (default model) and POST /models/<name>/explain.

The same bodies as prediction (records, split orientation, CSV); the answer gives, per row, the prediction, the
base value and one contribution per input feature. `Accept: image/svg+xml` on a one-row request draws a waterfall.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from flask import Blueprint, current_app, g, jsonify, request

from app.api import served_models
from app.api.prediction import read_table
from app.auth import require_scope
from app.errors import ApiError
from app.inference import explain

bp = Blueprint("explain", __name__)
JSON, SVG = "application/json", "image/svg+xml"
SLOTS = "agserve.explain_slots"


@bp.record_once
def _make_slots(state) -> None:
    # Per worker: explanations past the limit are refused at once, never queued in front of predictions.
    state.app.extensions[SLOTS] = threading.BoundedSemaphore(state.app.config["EXPLAIN_CONCURRENCY"])


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
    model = served_models().get(name)
    g.model, g.version = model.name, model.version
    all_classes, top = _options()
    answer_type = request.accept_mimetypes.best_match([JSON, SVG], default=JSON)
    table = read_table(model, current_app.config["EXPLAIN_MAX_ROWS"])
    if answer_type == SVG and table.n != 1:
        raise ApiError(422, "an SVG waterfall explains exactly one row", {"rows": table.n})
    slots = current_app.extensions[SLOTS]
    if not slots.acquire(blocking=False):
        raise ApiError(503, "explanations are at their concurrency limit in this worker; retry shortly",
                       {"limit": current_app.config["EXPLAIN_CONCURRENCY"]}, headers={"Retry-After": "1"})
    try:
        full = explain.explain_table(model, table, current_app.config["EXPLAIN_PERMUTATIONS"],
                                     current_app.extensions.get("agserve.cache"))
    finally:
        slots.release()
    g.rows = table.n
    rows = [explain.shape(model, row, all_classes, top) for row in full]
    if answer_type == SVG:
        response = current_app.response_class(waterfall(model.name, rows[0]), mimetype=SVG)
        response.headers["X-Model-Name"], response.headers["X-Model-Version"] = model.name, model.version
        return response
    return jsonify({
        "explanations": rows,
        "method": {"name": "permutation Shapley values (antithetic)",
                   "permutations": current_app.config["EXPLAIN_PERMUTATIONS"],
                   "background_rows": model.manifest["background"]["rows"]},
        "model_info": model.info,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": g.request_id,
    })


def _options() -> tuple[bool, int | None]:
    classes = request.args.get("classes", "predicted")
    if classes not in ("predicted", "all"):
        raise ApiError(422, "classes must be 'predicted' or 'all'", {"classes": ["Must be one of: predicted, all."]})
    top = request.args.get("top")
    if top is None:
        return classes == "all", None
    if not top.isdigit() or int(top) < 1:
        raise ApiError(422, "top must be a positive integer", {"top": ["Must be a positive integer."]})
    return classes == "all", int(top)


# --- the waterfall picture ---------------------------------------------------------------------------------------

WIDTH, LABEL_WIDTH, ROW_HEIGHT, MARGIN = 760, 300, 24, 16


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
    plot = WIDTH - LABEL_WIDTH - 2 * MARGIN

    def x(value: float) -> float:
        return round(LABEL_WIDTH + MARGIN + (value - low) / span * plot, 2)

    name = "value" if explanation["output"] is None else f"{explanation['kind']} of {explanation['output']}"
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
    text = "missing" if value is None else str(value)
    return text if len(text) <= 28 else text[:27] + "…"
