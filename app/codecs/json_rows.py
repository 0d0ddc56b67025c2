"""JSON rows: the records body {"data": [{feature: value}, ...]} and the pandas split orientation
{"data": {"columns": [...], "data": [[...], ...]}}, into a Table; answers as JSON objects."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from app.codecs.envelope import check_columns, check_rows, data_field, parse_json, require_rows
from app.errors import ApiError
from app.inference.dataplane import RequestContext
from app.inference.served import ServedModel
from app.inference.tables import Table, table_from_records, table_from_split


def decode(body: bytes, model: ServedModel, max_rows: int) -> Table:
    """The rows of a records or split body, refusing bad envelopes before any row is validated."""
    data = data_field(parse_json(body))
    if isinstance(data, dict):
        if set(data) != {"columns", "data"} or not isinstance(data["columns"], list) \
                or not isinstance(data["data"], list):
            raise ApiError(422, 'the split orientation is {"columns": [...], "data": [[...], ...]}',
                           {"data": ["Not a valid split orientation."]})
        check_columns(len(data["columns"]), model.max_columns)
        check_rows(len(data["data"]), max_rows)
        return require_rows(table_from_split(data["columns"], data["data"]))
    if not isinstance(data, list):
        raise ApiError(422, '"data" must be a list of rows', {"data": ["Not a valid list."]})
    check_rows(len(data), max_rows)
    check_columns(max((len(row) for row in data if isinstance(row, dict)), default=0), model.max_columns)
    return require_rows(table_from_records(data, model.feature_names))


def answer(model: ServedModel, context: RequestContext, **fields: Any) -> dict[str, Any]:
    """An answer object: what was asked for, then which model answered, when, and the request id."""
    return {**fields, "model_info": model.info,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": context.request_id}
