"""A loaded, warmed-up model version and how it turns input tables into predictions."""
from __future__ import annotations

import time
from functools import cached_property, lru_cache
from itertools import chain, compress
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
from marshmallow import ValidationError

from app import metrics, tracing
from app.inference.batching import Batcher
from app.inference.errors import InvalidInput
from app.inference.features import RowSpec
from app.inference.generators import Declined, feature_columns, frame_of
from app.inference.tables import (SlowPath, Table, check_columns, columns_from_rows, frame_from_columns,
                                  keys_match, merge_columns, model_columns, table_from_records)
from app.schemas import messages_of, validate_rows

CLASSIFICATION = ("binary", "multiclass")


@lru_cache(maxsize=64)
def row_builder(keys: tuple[str, ...]):
    """A function from a list of values to {key: value}; a dict display is 2.5x faster than dict(zip(...)).
    The keys are bound as names, never written into the code."""
    names = {f"k{i}": key for i, key in enumerate(keys)}
    display = ", ".join(f"k{i}: r[{i}]" for i in range(len(keys)))
    return eval(f"lambda r: {{{display}}}", names)  # noqa: S307 - code built from indices only
MATRIX_JSON_ROWS = 16  # from here on writing probabilities from the matrix is cheaper than building row objects
REPORTED_ROWS = 100  # invalid rows described in a 422; the rest are only counted, so errors stay small


class Prediction:
    """A model's answer for some rows. A classifier's class probabilities stay a float64 matrix until a consumer
    asks for them as row objects; the JSON writers (answer, prediction log, monitoring) take them straight from it."""

    def __init__(self, predictions: list[Any], probabilities: list[dict[str, float]] | None,
                 columns: list[str] | None = None, inputs: dict[str, Any] | None = None,
                 matrix: np.ndarray | None = None):
        self.predictions = predictions
        self._probabilities = probabilities
        self.columns = columns  # class labels, or quantile levels, in output order
        self.inputs = inputs  # the validated input columns these predictions answer
        self.matrix = matrix  # rows × columns, when the probabilities came from the model
        self._json: orjson.Fragment | None = None

    @property
    def probabilities(self) -> list[dict[str, float]] | None:
        """Each row's {class: probability}, built on first use."""
        if self._probabilities is None and self.matrix is not None:
            self._probabilities = list(map(row_builder(tuple(self.columns)), self.matrix.tolist()))
        return self._probabilities

    def probabilities_json(self) -> list[dict[str, float]] | orjson.Fragment | None:
        """The probabilities for orjson: the row objects' JSON written from the matrix (once), else the rows."""
        if self.matrix is None or not self.columns or len(self.matrix) < MATRIX_JSON_ROWS:
            return self.probabilities
        if self._json is None:
            self._json = orjson.Fragment(rows_json(self.columns, self.matrix))
        return self._json

    def row(self, index: int) -> list[Any]:
        """One row's answer as the cache stores it: [prediction, probabilities or None]."""
        return [self.predictions[index], None if self.probabilities is None else self.probabilities[index]]

    @classmethod
    def from_rows(cls, rows: list[list[Any]]) -> "Prediction":
        predictions = [row[0] for row in rows]
        probabilities = None if rows[0][1] is None else [row[1] for row in rows]
        if probabilities is not None:
            columns = list(probabilities[0])
        else:
            columns = list(predictions[0]) if isinstance(predictions[0], dict) else None
        return cls(predictions, probabilities, columns)

    def slice(self, start: int, stop: int) -> "Prediction":
        probabilities = None if self._probabilities is None else self._probabilities[start:stop]
        matrix = None if self.matrix is None else self.matrix[start:stop]
        return Prediction(self.predictions[start:stop], probabilities, self.columns, matrix=matrix)


def rows_json(columns: list[str], matrix: np.ndarray) -> bytes:
    """What orjson writes for [{column: value, ...} for each row of a float64 matrix], without building the rows:
    orjson writes each column's numbers once, and the keys are laid between them by slice assignment."""
    n = len(matrix)
    if n == 0:
        return b"[]"
    keys = [(b"{" if j == 0 else b",") + orjson.dumps(column) + b":" for j, column in enumerate(columns)]
    by_column = np.ascontiguousarray(matrix.T)  # orjson writes C-contiguous arrays only
    cells = [orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",") for values in by_column]
    width = 2 * len(columns) + 1  # per row: key, value for each column, then "},"
    pieces = [b"},"] * (n * width)
    for j, (key, column) in enumerate(zip(keys, cells)):
        pieces[2 * j::width] = [key] * n
        pieces[2 * j + 1::width] = column
    return b"[" + b"".join(pieces)[:-1] + b"]"


class DirectTicket:
    """The batcher's ticket for a model served without batching: submit predicts at once, in this thread."""

    def __init__(self, predict_parts):
        self._predict_parts = predict_parts

    def __enter__(self) -> "DirectTicket":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def submit(self, columns: dict[str, Any], n: int, trace: tracing.RequestTrace | None = None) -> Prediction:
        if trace is None:
            return self._predict_parts([columns], [n])[0]
        with tracing.model_call([trace], n, 1):
            return self._predict_parts([columns], [n])[0]


class Classes(NamedTuple):
    names: list[str]  # as the answer's columns
    values: np.ndarray  # as AutoGluon's predict gives the labels


class MaskedRows(dict):
    """Columns of an explanation's masked rows: predicted like any rows, never counted as predictions."""


class ServedModel:
    """One version of one model, held in memory by a worker."""

    def __init__(self, name: str, version: str, manifest: dict[str, Any], predictor, spec: RowSpec):
        self.name = name
        self.version = version
        self.manifest = manifest
        self.predictor = predictor
        self.spec = spec  # the one feature spec: the fast validator, and the schemas below are generated from it
        self.schema = spec.row_schema()
        self.problem_type = manifest["problem_type"]
        self.features = manifest["features"]
        self.feature_names = spec.names
        self._kinds = spec.kinds
        self.max_columns = max(1024, len(self.features))  # the loader applies AGSERVE_MAX_COLUMNS
        self.max_cell_bytes = 4 * 65_536 + 2  # and the longest UTF-8 CSV cell its string lengths allow
        self.batcher: Batcher | None = None
        self.background: dict[str, Any] | None = None  # validated columns of the stored background sample
        self.cache_namespace = f"{name}:{version}"  # the registry adds the activation it loaded
        self.cache_max_rows = 100
        self.explain_chunk_rows = 512  # masked rows per model call; the loader applies AGSERVE_EXPLAIN_CHUNK_ROWS
        self.plan = None  # the models' few-rows arrays, where the loader found a plan (app/inference/ensembles.py)

    @property
    def info(self) -> dict[str, Any]:
        """The model_info block of every answer: which model answered."""
        return {"name": self.name, "version": self.version, "problem_type": self.problem_type,
                "eval_metric": self.manifest["eval_metric"]}

    def start_batching(self, max_rows: int, max_wait: float, deferred_share: float = 1.0) -> None:
        self.batcher = Batcher(self._predict_parts, max_rows, max_wait, name=f"{self.name}-{self.version}",
                               deferred_share=deferred_share)

    def close(self) -> None:
        """Stop batching once what is queued is done (the version has been replaced)."""
        if self.batcher is not None:
            self.batcher.close()

    def validate(self, rows: list[Any], positions: list[int] | None = None,
                 invalid_rows: int | None = None) -> list[dict[str, Any]]:
        """Rows checked by the marshmallow schema; InvalidInput with per-row, per-field messages. When only some
        rows of a request are judged, positions[i] is rows[i]'s place in it and invalid_rows its count of refusals."""
        try:
            return validate_rows(self.schema, rows)
        except ValidationError as exc:
            messages = messages_of(exc)
        if positions is not None:
            messages = {positions[i]: message for i, message in messages.items()}
        invalid = sorted(messages)
        reported = {str(i): messages[i] for i in invalid[:REPORTED_ROWS]}
        raise InvalidInput("input rows do not match the model's schema",
                           {"rows": reported, "invalid_rows": invalid_rows or len(invalid),
                            "reported_rows": len(reported)})

    def validate_table(self, table: Table) -> dict[str, Any]:
        """Typed columns: the fast column-wise path, or marshmallow when it cannot vouch for a value."""
        if table.records is None:
            check_columns(table, self.feature_names, self.spec.unknown, self.spec.missing)
        try:
            return self.spec.convert(table)
        except SlowPath as slow:  # marshmallow decides outside the handler: its refusal keeps no fast-path column
            unvouched = slow.args
        refused = self.spec.refused_rows(table, self.schema, unvouched)
        if refused is None and table.records is not None:
            refused = self._refused_records(table.records)
        if refused:  # the schema words only the rows reported; an acceptance is still judged whole
            reported = refused[:REPORTED_ROWS]
            self.validate(table.rows(reported), reported, len(refused))
        return columns_from_rows(self.validate(table.rows()), self.feature_names)

    def _refused_records(self, records: list[Any]) -> list[int] | None:
        """The rows the schema refuses among row objects some of which have other keys than the features: those
        judged whole, the others by the fast path's suspects. None when a row is not an object (validate_rows'
        refusal then names only those)."""
        if not all(isinstance(row, dict) for row in records):
            return None
        regular = list(keys_match(records, self.feature_names))
        odd = [i for i, matches in enumerate(regular) if not matches]
        refused = []
        try:
            validate_rows(self.schema, [records[i] for i in odd])
        except ValidationError as exc:
            refused = [odd[i] for i in messages_of(exc)]
        rest = table_from_records(list(compress(records, regular)), self.feature_names)
        try:
            self.spec.convert(rest)
        except SlowPath as slow:
            positions = list(compress(range(len(records)), regular))
            refused += [positions[i] for i in self.spec.refused_rows(rest, self.schema, slow.args) or []]
        return sorted(refused)

    def admission(self, deferrable: bool = False):
        """A ticket to the batcher, taken before validating so concurrent requests wait for each other; without
        batching, one that predicts in this thread. Leaving its with-block unsubmitted withdraws it."""
        return self.batcher.ticket(deferrable) if self.batcher is not None else DirectTicket(self._predict_parts)

    def predict(self, rows: list[Any]) -> Prediction:
        """Validate and predict row objects as a request would, without the data plane's cache, log and monitoring
        (the validation gate's stability and latency checks)."""
        table = table_from_records(rows, self.feature_names)
        with self.admission() as ticket:
            return ticket.submit(self.validate_table(table), table.n)

    def predict_columns(self, columns: dict[str, Any], n: int) -> Prediction:
        """Predict validated columns through the batcher (no cache, no log: explanations' masked rows)."""
        with self.admission(deferrable=isinstance(columns, MaskedRows)) as ticket:
            return ticket.submit(columns, n)

    def frame(self, columns: dict[str, Any]) -> pd.DataFrame:
        return frame_from_columns(columns, self._kinds)

    def predict_validated(self, columns: dict[str, Any], n: int) -> Prediction:
        """Validated columns' answers. A few rows skip the DataFrames AutoGluon would take apart again: the feature
        pipeline takes their columns (app/inference/generators.py), and the models its columns where a plan covers
        them (app/inference/ensembles.py), else its frame."""
        data = model_columns(columns, self._kinds)
        try:
            features = feature_columns(self.predictor, data, n)
            if self.plan is not None:
                answers = self.plan(features, n)
                if self.problem_type in CLASSIFICATION:
                    return self._classified(answers)
                return Prediction(np.asarray(answers, dtype="float64").tolist(), None)
            frame = frame_of(features, n)
        except Declined:
            return self.predict_frame(pd.DataFrame(data, copy=False))
        return self.predict_frame(frame, transform_features=False)

    def _predict_parts(self, parts: list[dict[str, Any]], counts: list[int]) -> list[Prediction]:
        started = time.perf_counter()
        columns = parts[0] if len(parts) == 1 else merge_columns(parts, self._kinds)
        whole = self.predict_validated(columns, sum(counts))
        metrics.observe_batch(self.name, self.version, time.perf_counter() - started, sum(counts), len(counts))
        results, start = [], 0
        for count in counts:
            results.append(whole.slice(start, start + count))
            start += count
        answered = list(chain.from_iterable(result.predictions for part, result in zip(parts, results)
                                            if not isinstance(part, MaskedRows)))
        metrics.observe_predictions(self.name, self.version, self.problem_type, answered)
        return results

    def predict_frame(self, frame: pd.DataFrame, transform_features: bool = True) -> Prediction:
        predictor = self.predictor
        if self.problem_type in CLASSIFICATION:
            # One predict_proba call, as the array its DataFrame would wrap; labels derived as AutoGluon's predict would.
            return self._classified(predictor.predict_proba(frame, as_multiclass=True, as_pandas=False,
                                                            transform_features=transform_features))
        result = predictor.predict(frame, transform_features=transform_features)
        if isinstance(result, pd.DataFrame):  # quantile: one column per quantile level
            levels = [str(c) for c in result.columns]
            return Prediction(list(map(row_builder(tuple(levels)), result.to_numpy(dtype="float64").tolist())), None,
                              levels)
        return Prediction(result.to_numpy(dtype="float64").tolist(), None)

    def _classified(self, proba: np.ndarray) -> Prediction:
        classes = self._classes
        return Prediction(self._labels(proba, classes.values), None, classes.names,
                          matrix=np.asarray(proba, dtype="float64"))

    @cached_property
    def _classes(self) -> "Classes":
        """The columns of AutoGluon's predict_proba DataFrame: its class labels as a pandas Index makes them."""
        index = pd.Index(self.predictor.class_labels)
        return Classes([str(c) for c in index], np.asarray(index))

    def _labels(self, values: np.ndarray, classes: np.ndarray) -> list[Any]:
        """AutoGluon's predict_from_proba without its DataFrame round trips (half a millisecond a call): the positive
        class when its probability exceeds the decision threshold, else the first most probable class. The
        probabilities are compared in AutoGluon's own dtype, as it does."""
        if self.problem_type == "binary":
            threshold = self.predictor.decision_threshold
            picked = (values[:, 1] > (0.5 if threshold is None else threshold)).astype(int)
        else:
            picked = values.argmax(axis=1)
        return classes[picked].tolist()

    def warm_up(self) -> float:
        """Predict the manifest's sample row (or an all-missing row); return the latency in ms."""
        reference = self.manifest.get("reference") or {}
        row = reference.get("sample_row") or {f["name"]: None for f in self.features}
        started = time.perf_counter()
        # The same path as a request, without the batcher and without counting it as traffic.
        self.predict_validated(self.validate_table(table_from_records([row], self.feature_names)), 1)
        return (time.perf_counter() - started) * 1000
