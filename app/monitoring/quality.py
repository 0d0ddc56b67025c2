"""Live quality: outcomes joined to the predictions the server answered, scored by AutoGluon itself.

Scores use AutoGluon's convention (higher is better: RMSE and log loss are negative), the same as the validation
scores in the manifest, so the two sit side by side without conversion.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

CLASSIFICATION = ("binary", "multiclass")


class BadOutcome(ValueError):
    """An actual value the model could never have predicted (not a class, not a finite number)."""


def parse_actual(manifest: dict[str, Any], value: Any) -> Any:
    """The actual outcome as the version's label type: one of its classes, or a finite number."""
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, and numbers no float64 holds
        raise BadOutcome("must be a finite number")
    if manifest["problem_type"] in CLASSIFICATION:
        classes = manifest["class_labels"] or []
        for label in classes:
            if value == label or (isinstance(value, (str, int, float)) and not isinstance(value, bool)
                                  and str(value) == str(label)):
                return label
        raise BadOutcome(f"not one of the classes {classes}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadOutcome("must be a finite number")
    return float(value)


def live_scores(model, joined: list[tuple[Any, dict[str, Any], int]]) -> dict[str, float] | None:
    """AutoGluon's scores of the joined (actual, outputs, row) triples, or None without any."""
    if not joined:
        return None
    y_true = pd.Series([actual for actual, _, _ in joined])
    if model.problem_type in CLASSIFICATION:
        classes = model.predictor.class_labels
        rows = [outputs["probabilities"][row] for _, outputs, row in joined]
        y_pred: Any = pd.DataFrame([[probabilities[str(c)] for c in classes] for probabilities in rows],
                                   columns=classes)
    elif model.problem_type == "quantile":
        levels = model.predictor.quantile_levels
        y_pred = pd.DataFrame([[outputs["predictions"][row][str(level)] for level in levels]
                               for _, outputs, row in joined], columns=levels)
    else:
        y_pred = pd.Series([outputs["predictions"][row] for _, outputs, row in joined], dtype="float64")
    try:
        scores = model.predictor.evaluate_predictions(y_true=y_true, y_pred=y_pred, auxiliary_metrics=True,
                                                      silent=True)
    except ValueError:  # an auxiliary metric is undefined here (ROC AUC of one class): the eval metric alone
        scores = model.predictor.evaluate_predictions(y_true=y_true, y_pred=y_pred, auxiliary_metrics=False,
                                                      silent=True)
    return {name: float(value) for name, value in scores.items() if isinstance(value, (int, float))}


def quality_report(model, joined: list[tuple[Any, dict[str, Any], int]], window_seconds: float) -> dict[str, Any]:
    metric = model.manifest["eval_metric"]
    reference = model.manifest.get("reference") or {}
    validation = reference.get("scores") or {}
    try:
        live, error = live_scores(model, joined), None
    except ValueError as exc:  # the eval metric itself is undefined on these outcomes
        live, error = None, f"the live metric is not defined on these outcomes yet: {exc}"
    return {
        "model": model.name, "version": model.version, "window_seconds": window_seconds, "outcomes": len(joined),
        "eval_metric": metric, "higher_is_better": True,
        "live": live, "validation": validation or None,
        "live_eval_metric": None if live is None else live.get(metric),
        "validation_eval_metric": validation.get(metric),
        "error": error,
    }
