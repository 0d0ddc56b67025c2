"""JSON rows: the records body {"data": [{feature: value}, ...]} and the pandas split orientation
{"data": {"columns": [...], "data": [[...], ...]}}, into a Table; answers as JSON objects."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import simdjson

from app.codecs.envelope import check_columns, check_rows, data_field, parse_json, require_rows
from app.errors import ApiError
from app.inference.dataplane import RequestContext
from app.inference.served import ServedModel
from app.inference.tables import Table, table_from_records, table_from_split


COUNT_FIRST = 1 << 20  # bytes; below this a whole parse costs less than a millisecond or two


def decode(body: bytes, model: ServedModel, max_rows: int) -> Table:
    """The rows of a records or split body, refusing bad envelopes before any row is validated."""
    if len(body) >= COUNT_FIRST and _commas_reach(body, min(max_rows, model.max_columns)):
        count_first(body, model, max_rows)
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
    objects = set(map(type, data)) == {dict}  # the usual body: every row an object, measured at C speed
    widths = map(len, data) if objects else (len(row) for row in data if isinstance(row, dict))
    check_columns(max(widths, default=0), model.max_columns)
    return require_rows(table_from_records(data, model.feature_names))


def count_first(body: bytes, model: ServedModel, max_rows: int) -> None:
    """Refuse a large body past the row or column limit before building it: orjson holds the GIL ~0.3 s to build
    32 MiB of small rows as Python objects, simdjson's tape of the same is ~40 ms and counts an array's elements or
    an object's keys without making them. Only counts are judged here, in decode's order; anything else (JSON that
    simdjson refuses, another envelope) is left to the whole parse, so accepted bodies take the same path."""
    try:
        document = simdjson.Parser().parse(body)  # a parser per call: a kept one would keep its 32 MiB tape
    except (ValueError, RuntimeError):  # not JSON, a lone surrogate, an integer past 64 bits: the parse says which
        return
    # A duplicated key is kept once by the whole parse (the last), so only objects without one are looked into.
    if not isinstance(document, simdjson.Object) or len(document) != 1 or "data" not in document:
        return
    data = document["data"]
    if isinstance(data, simdjson.Object):
        if len(data) == 2 and set(data.keys()) == {"columns", "data"} and isinstance(data["columns"], simdjson.Array) \
                and isinstance(data["data"], simdjson.Array):
            check_columns(len(data["columns"]), model.max_columns)
            check_rows(len(data["data"]), max_rows)
    elif isinstance(data, simdjson.Array):
        check_rows(len(data), max_rows)
        for row in data:  # at most max_rows; len counts a duplicated key twice, the dict of the whole parse once
            if isinstance(row, simdjson.Object) and len(row) > model.max_columns \
                    and _distinct_past(row, model.max_columns):
                raise ApiError(413, f"too many columns: more than {model.max_columns}",
                               {"max_columns": model.max_columns})


def _commas_reach(body: bytes, count: int) -> bool:
    """Whether the body holds at least count commas: rows, columns and keys are each at most one more than the
    commas, so with fewer there is nothing to count (a few large values). memchr per comma; stops at count."""
    at = -1
    for _ in range(count):
        at = body.find(b",", at + 1)
        if at < 0:
            return False
    return True


def _distinct_past(row: "simdjson.Object", limit: int) -> bool:
    """Whether the object has more than limit distinct keys (stops as soon as it knows)."""
    seen: set[str] = set()
    for key in row.keys():
        seen.add(key)
        if len(seen) > limit:
            return True
    return False


def answer(model: ServedModel, context: RequestContext, **fields: Any) -> dict[str, Any]:
    """An answer object: what was asked for, then which model answered, when, and the request id."""
    return {**fields, "model_info": model.info,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": context.request_id}
