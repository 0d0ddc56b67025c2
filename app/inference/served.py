"""A loaded, warmed-up model version and how it turns validated rows into predictions."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from marshmallow import Schema, ValidationError

from app.inference.errors import InvalidInput
from app.schemas import validate_rows

CLASSIFICATION = ("binary", "multiclass")
REPORTED_ROWS = 100  # invalid rows described in a 422; the rest are only counted, so errors stay small


@dataclass
class Prediction:
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None


class ServedModel:
    """One version of one model, held in memory by a worker."""

    def __init__(self, name: str, version: str, manifest: dict[str, Any], predictor, schema: Schema):
        self.name = name
        self.version = version
        self.manifest = manifest
        self.predictor = predictor
        self.schema = schema
        self.problem_type = manifest["problem_type"]
        self.features = manifest["features"]
        self._dtypes = {f["name"]: f["kind"] for f in self.features}

    @property
    def info(self) -> dict[str, Any]:
        """The seed's model_info block: which model answered."""
        return {"name": self.name, "version": self.version, "problem_type": self.problem_type,
                "eval_metric": self.manifest["eval_metric"]}

    def validate(self, rows: list[Any]) -> list[dict[str, Any]]:
        try:
            return validate_rows(self.schema, rows)
        except ValidationError as exc:
            invalid = sorted(exc.messages)
            reported = {str(i): exc.messages[i] for i in invalid[:REPORTED_ROWS]}
            raise InvalidInput("input rows do not match the model's schema",
                               {"rows": reported, "invalid_rows": len(invalid),
                                "reported_rows": len(reported)}) from None

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """A DataFrame built column by column, with dtypes AutoGluon casts exactly as in training."""
        columns = {}
        for name, kind in self._dtypes.items():
            values = [row.get(name) for row in rows]
            if kind == "numeric" or (kind == "integer" and None in values):
                columns[name] = pd.array([float("nan") if v is None else v for v in values], dtype="float64")
            elif kind == "integer":
                columns[name] = pd.array(values, dtype="int64")
            else:
                columns[name] = pd.array(values, dtype="object")
        return pd.DataFrame(columns)

    def predict(self, rows: list[Any]) -> Prediction:
        """Validate rows, then predict them in one model call."""
        return self.predict_frame(self.frame(self.validate(rows)))

    def predict_frame(self, frame: pd.DataFrame) -> Prediction:
        predictor = self.predictor
        if self.problem_type in CLASSIFICATION:
            # One predict_proba call; labels are derived from it, as AutoGluon's predict would.
            proba = predictor.predict_proba(frame, as_multiclass=True)
            labels = predictor.predict_from_proba(proba)
            classes = [str(c) for c in proba.columns]
            probabilities = [dict(zip(classes, row)) for row in proba.to_numpy(dtype="float64").tolist()]
            return Prediction(labels.tolist(), probabilities)
        result = predictor.predict(frame)
        if isinstance(result, pd.DataFrame):  # quantile: one column per quantile level
            levels = [str(c) for c in result.columns]
            return Prediction([dict(zip(levels, row)) for row in result.to_numpy(dtype="float64").tolist()], None)
        return Prediction(result.to_numpy(dtype="float64").tolist(), None)

    def warm_up(self) -> float:
        """Predict the manifest's sample row (or an all-missing row); return the latency in ms."""
        reference = self.manifest.get("reference") or {}
        row = reference.get("sample_row") or {f["name"]: None for f in self.features}
        started = time.perf_counter()
        self.predict([row])
        return (time.perf_counter() - started) * 1000
