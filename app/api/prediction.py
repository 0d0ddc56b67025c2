"""Predictions: POST /predict (the seed's contract, default model) and POST /models/<name>/predict.

Bodies: JSON records {"data": [{...}]}, the pandas split orientation {"data": {"columns": [...], "data": [[...]]}},
or text/csv with a header row. Answers: JSON, or CSV when the client sends Accept: text/csv.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timezone

import pandas as pd
from flask import Blueprint, current_app, g, jsonify, request

from app.api import parse_json, read_body, served_models
from app.auth import require_scope
from app.errors import ApiError
from app.inference.served import Prediction, ServedModel
from app.inference.tables import Table, check_names, table_from_csv, table_from_records, table_from_split
from app.predictionlog import RecordNotKept
from app.values import NAME_MAX

bp = Blueprint("prediction", __name__)
JSON, CSV = "application/json", "text/csv"
NOT_RECORDED = "predictions cannot be recorded now and this server answers only recorded ones; retry later"
CELL_ENDS = (b",", b"\n", b"\r")


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
    answer_type = request.accept_mimetypes.best_match([JSON, CSV], default=JSON)
    table = read_table(model, current_app.config["MAX_ROWS"])
    result = predict_and_record(model, table)
    if answer_type == CSV:
        return csv_answer(model, result)
    return jsonify({
        "predictions": result.predictions,
        "probabilities": result.probabilities,
        "model_info": model.info,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": g.request_id,
    })


def predict_and_record(model: ServedModel, table: Table) -> Prediction:
    """Every protocol's way to a prediction: the cache and the model, then the prediction log and monitoring."""
    g.rows = table.n
    monitor = current_app.extensions.get("agserve.monitor")
    refuse = current_app.config["ON_RECORD_FAILURE"] == "refuse"
    if refuse and monitor is not None and monitor.collector.failing:
        raise ApiError(503, NOT_RECORDED, {"store": "monitoring"})
    result = model.predict_table(table, current_app.extensions.get("agserve.cache"))
    log = current_app.extensions.get("agserve.prediction_log")
    if log is not None:  # before the answer leaves: a prediction answered is a prediction logged
        try:
            log.write(g.request_id, model.name, model.version, result.inputs, result.predictions,
                      result.probabilities)
        except RecordNotKept:
            raise ApiError(503, NOT_RECORDED, {"store": "prediction_log"}) from None
    if monitor is not None:  # drift and feedback: noted here, counted and stored by the worker's flush thread
        monitor.collector.observe_prediction(g.request_id, model, result)
    return result


def read_table(model: ServedModel, max_rows: int) -> Table:
    """The request's rows as a table, refusing bad bodies before any row is validated."""
    body = read_body((JSON, CSV))
    if request.mimetype == CSV:
        table = _csv_table(body, model, max_rows)
        if table.n > max_rows:  # parsing stopped one row past the limit
            raise ApiError(413, f"too many rows: more than {max_rows}", {"max_rows": max_rows})
        return _require_rows(table)
    document = parse_json(body)
    if not isinstance(document, dict) or "data" not in document:
        raise ApiError(422, 'request body must be a JSON object with "data": rows, or the split orientation',
                       {"data": ["Missing data for required field."]})
    unknown = sorted(set(document) - {"data"})
    if unknown:
        raise ApiError(422, "request body has unknown keys", {k: ["Unknown field."] for k in unknown[:100]})
    data = document["data"]
    if isinstance(data, dict):
        if set(data) != {"columns", "data"} or not isinstance(data["columns"], list) \
                or not isinstance(data["data"], list):
            raise ApiError(422, 'the split orientation is {"columns": [...], "data": [[...], ...]}',
                           {"data": ["Not a valid split orientation."]})
        check_column_count(len(data["columns"]), model.max_columns)
        _check_count(len(data["data"]), max_rows)
        return _require_rows(table_from_split(data["columns"], data["data"]))
    if not isinstance(data, list):
        raise ApiError(422, '"data" must be a list of rows', {"data": ["Not a valid list."]})
    _check_count(len(data), max_rows)
    check_column_count(max((len(row) for row in data if isinstance(row, dict)), default=0), model.max_columns)
    return _require_rows(table_from_records(data, model.feature_names))


def _csv_table(body: bytes, model: ServedModel, max_rows: int) -> Table:
    names = _csv_header(body, model)
    _check_cell_bytes(body, model.max_cell_bytes)
    nul = body.find(b"\x00")
    if nul >= 0:  # pandas' parser would end the cell there and drop the rest without a word
        line = body.count(b"\n", 0, nul) + 1
        raise ApiError(422, f"the CSV body holds a NUL character (line {line}); CSV cells cannot carry one",
                       {"data": [f"NUL character on line {line}."]})
    numeric = {f["name"]: "float64" for f in model.features if f["kind"] == "numeric"}
    # Integer features stay text until validated: float64 would round values past 2**53 without a word.
    # round_trip: pandas' default float parser is off by one ulp on about a third of 17-digit values
    options = dict(keep_default_na=False, na_values=[""], encoding="utf-8", encoding_errors="strict",
                   float_precision="round_trip", nrows=max_rows + 1,
                   usecols=[name for name in names if name in model.feature_names])
    try:
        try:  # numeric features parsed by pandas at C speed; any odd cell sends the whole body to the text path
            frame = pd.read_csv(io.BytesIO(body), dtype=defaultdict(lambda: str, numeric), **options)
        except ValueError:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, **options)
    except pd.errors.EmptyDataError:
        raise ApiError(422, "the CSV body has no header row", {"data": ["Missing data for required field."]}) from None
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "request body is not valid UTF-8 CSV", {"reason": type(exc).__name__}) from None
    return table_from_csv(frame)


def _csv_header(body: bytes, model: ServedModel) -> list[str]:
    """The header's column names, checked (count, then names) before pandas reads a single row: a header of a
    million columns costs a scan of its first line, not a million-column frame."""
    ends = [i for i in (body.find(b"\n"), body.find(b"\r")) if i >= 0]
    end = min(ends) if ends else len(body)
    check_column_count(body.count(b",", 0, end) + 1, model.max_columns)  # quoted commas count too: an upper bound
    if end > model.max_columns * (NAME_MAX + 3):  # every name at most NAME_MAX, quoted, plus a comma
        raise ApiError(413, f"the CSV header is longer than {model.max_columns * (NAME_MAX + 3)} bytes",
                       {"max_columns": model.max_columns})
    line = body[:end]
    try:
        names = next(csv.reader([line.decode("utf-8-sig")]), [])
    except (ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "request body is not valid UTF-8 CSV", {"reason": type(exc).__name__}) from None
    if not names:
        raise ApiError(422, "the CSV body has no header row", {"data": ["Missing data for required field."]})
    check_names(names, model.feature_names, model.unknown_fields, model.missing_features)
    return names


def _check_cell_bytes(body: bytes, limit: int) -> None:
    """422 when a run of bytes without comma or line break (it lies inside one cell) is longer than any value the
    model accepts, found with a few memchr calls before pandas copies a 32 MiB cell. A quoted cell holding commas
    escapes this check and meets the per-kind lengths after parsing."""
    start = _long_run(body, limit)
    if start is not None:
        line = body.count(b"\n", 0, start) + 1
        raise ApiError(422, f"a CSV cell on line {line} is longer than {limit} bytes, more than any feature accepts",
                       {"data": [f"Cell longer than {limit} bytes on line {line}."], "max_cell_bytes": limit})


def _long_run(body: bytes, limit: int) -> int | None:
    """Where a run of more than limit bytes free of CELL_ENDS starts, or None. Such a run holds a whole block of
    limit // 2 bytes, so only blocks without any delimiter are looked at more closely, within limit bytes."""
    step = max(1, limit // 2)
    for block in range(0, len(body), step):
        stop = min(block + step, len(body))
        if any(body.find(end, block, stop) >= 0 for end in CELL_ENDS):
            continue
        left = max(body.rfind(end, max(0, block - limit), block) for end in CELL_ENDS)
        if left < 0 and block > limit:
            return block - limit
        rights = [i for i in (body.find(end, stop, stop + limit + 1) for end in CELL_ENDS) if i >= 0]
        right = min(rights) if rights else min(len(body), stop + limit + 1)
        if right - left - 1 > limit:
            return left + 1
    return None


def check_column_count(columns: int, max_columns: int) -> None:
    if columns > max_columns:
        raise ApiError(413, f"too many columns: {columns} (at most {max_columns})",
                       {"columns": columns, "max_columns": max_columns})


def _check_count(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise ApiError(413, f"too many rows: {rows} (at most {max_rows})", {"rows": rows, "max_rows": max_rows})


def _require_rows(table: Table) -> Table:
    if table.n == 0:
        raise ApiError(422, '"data" must hold at least one row', {"data": ["Shorter than minimum length 1."]})
    return table


def csv_answer(model: ServedModel, result: Prediction):
    """Rows of `prediction` and, for classifiers, `proba_<class>` (quantiles: `quantile_<level>`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if result.probabilities is not None:
        writer.writerow(["prediction"] + [f"proba_{c}" for c in result.columns])
        writer.writerows([label, *probs.values()] for label, probs in zip(result.predictions,
                                                                           result.probabilities))
    elif result.columns is not None:
        writer.writerow([f"quantile_{level}" for level in result.columns])
        writer.writerows(list(row.values()) for row in result.predictions)
    else:
        writer.writerow(["prediction"])
        writer.writerows([value] for value in result.predictions)
    response = current_app.response_class(buffer.getvalue(), mimetype=CSV)
    response.headers["X-Model-Name"], response.headers["X-Model-Version"] = model.name, model.version
    return response

