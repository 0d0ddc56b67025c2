"""HTTP blueprints: thin views that parse, call the model layer and shape the answer."""
from __future__ import annotations

from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError

from app import jsonio
from app.errors import ApiError
from app.inference import ModelRegistry
from app.schemas import messages_of
from app.values import LoneSurrogate


def served_models() -> ModelRegistry:
    return current_app.extensions["agserve.models"]


def read_body(accepted: tuple[str, ...] = ("application/json",)) -> bytes:
    """The raw body: 415 for a content type not in accepted, 413 past AGSERVE_MAX_BODY_BYTES."""
    if request.mimetype not in accepted:
        raise ApiError(415, f"Content-Type must be {' or '.join(accepted)}",
                       {"content_type": request.mimetype or None, "accepted": list(accepted)})
    return request_body()


def request_body() -> bytes:
    """The raw body, 413 past AGSERVE_MAX_BODY_BYTES (before reading it when Content-Length says so). A body of
    known length is taken in one read: werkzeug's 64 KiB steps make gunicorn copy its read-ahead buffer on each,
    which is 0.1 s of CPU for 32 MiB; a chunked body goes through werkzeug's stream, which stops at the limit."""
    limit = current_app.config["MAX_BODY_BYTES"]
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "request body too large", {"max_bytes": limit})
    if length is None:
        body = request.get_data(cache=False)
    else:
        body = request.environ["wsgi.input"].read(length)
        if len(body) < length:
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


def read_json() -> Any:
    """The request body as JSON (415 for another content type, 413 too large, 400 not JSON)."""
    return parse_json(read_body())


def load_body(schema: Schema) -> dict[str, Any]:
    """The JSON body validated by a marshmallow schema; 422 with its messages otherwise."""
    document = read_json()
    if not isinstance(document, dict):
        raise ApiError(422, "request body must be a JSON object", {"_schema": ["Invalid input type."]})
    try:
        return schema.load(document)
    except ValidationError as exc:
        raise ApiError(422, "request body does not match the schema", messages_of(exc)) from None
