"""The envelope of every request body, checked once here for every codec: content type, body size, JSON, the
`data` field and its keys, and the row and column limits. A body refused here never reaches validation."""
from __future__ import annotations

from typing import Any

from flask import current_app, request

from app import jsonio
from app.errors import ApiError
from app.metrics import SLOW_CLIENTS
from app.inference.tables import Table
from app.values import LoneSurrogate

JSON, CSV = "application/json", "text/csv"


def read_body(accepted: tuple[str, ...] = (JSON,)) -> bytes:
    """The raw body: 415 for a content type not in accepted, 413 past AGSERVE_MAX_BODY_BYTES."""
    if request.mimetype not in accepted:
        raise ApiError(415, f"Content-Type must be {' or '.join(accepted)}",
                       {"content_type": request.mimetype or None, "accepted": list(accepted)})
    return request_body()


def request_body() -> bytes:
    """The raw body, 413 past AGSERVE_MAX_BODY_BYTES (before reading it when Content-Length says so), 408 when it
    arrives too slowly (under gunicorn the read raises TimeoutError: app/workers.py). A body of known length is
    taken in one read: werkzeug's 64 KiB steps make gunicorn copy its read-ahead buffer on each, which is 0.1 s of
    CPU for 32 MiB; a chunked body goes through werkzeug's stream, which stops at the limit."""
    limit = current_app.config["MAX_BODY_BYTES"]
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "request body too large", {"max_bytes": limit})
    try:
        body = request.get_data(cache=False) if length is None else request.environ["wsgi.input"].read(length)
    except TimeoutError:
        SLOW_CLIENTS.labels("body").inc()
        raise ApiError(408, "the request body did not arrive in time", {}) from None
    if length is not None and len(body) < length:
        raise ApiError(400, "request body ended before its Content-Length", {"content_length": length})
    if len(body) > limit:
        raise ApiError(413, "request body too large", {"max_bytes": limit})
    return body


def parse_json(body: bytes, constants: tuple[str, ...] = tuple(jsonio.CONSTANTS)) -> Any:
    """400 for anything that is not UTF-8 JSON (constants: which of NaN, Infinity, -Infinity may appear)."""
    try:
        return jsonio.loads(body, constants)
    except LoneSurrogate as exc:
        raise ApiError(400, f"request body is not valid UTF-8 JSON: {exc}",
                       {"reason": "LoneSurrogate", "field": exc.path}) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting is not
        raise ApiError(400, "request body is not valid UTF-8 JSON", {"reason": type(exc).__name__}) from None


def data_field(document: Any) -> Any:
    """The `data` of {"data": ...}: 422 when it is missing or the object has other keys."""
    if not isinstance(document, dict) or "data" not in document:
        raise ApiError(422, 'request body must be a JSON object with "data": rows, or the split orientation',
                       {"data": ["Missing data for required field."]})
    unknown = sorted(set(document) - {"data"})
    if unknown:
        raise ApiError(422, "request body has unknown keys", {k: ["Unknown field."] for k in unknown[:100]})
    return document["data"]


def check_rows(rows: int, max_rows: int, status: int = 413, counted: bool = True) -> None:
    """413 past the row limit (a protocol that knows no 413 passes its own status); counted=False when parsing
    stopped one row past the limit, so the real count is unknown."""
    if rows > max_rows:
        if not counted:
            raise ApiError(status, f"too many rows: more than {max_rows}", {"max_rows": max_rows})
        raise ApiError(status, f"too many rows: {rows} (at most {max_rows})", {"rows": rows, "max_rows": max_rows})


def check_columns(columns: int, max_columns: int) -> None:
    if columns > max_columns:
        raise ApiError(413, f"too many columns: {columns} (at most {max_columns})",
                       {"columns": columns, "max_columns": max_columns})


def require_rows(table: Table) -> Table:
    if table.n == 0:
        raise ApiError(422, '"data" must hold at least one row', {"data": ["Shorter than minimum length 1."]})
    return table
