"""HTTP blueprints: thin views that decode, call the data plane or a service, and encode the answer."""
from __future__ import annotations

from typing import Any

from flask import g, request
from marshmallow import Schema, ValidationError

from app.codecs import csv_rows, json_rows
from app.codecs.envelope import CSV, JSON, parse_json, read_body
from app.errors import ApiError
from app.inference.dataplane import RequestContext
from app.inference.served import ServedModel
from app.inference.tables import Table
from app.schemas import messages_of


def request_context() -> RequestContext:
    """This request's context, made by app.api.hooks before any view runs."""
    return g.context


def decode_rows(model: ServedModel, max_rows: int) -> Table:
    """The request's rows as a table, by content type: JSON records or split orientation, or CSV."""
    with request_context().step("decode"):
        body = read_body((JSON, CSV))
        codec = csv_rows if request.mimetype == CSV else json_rows
        return codec.decode(body, model, max_rows)


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
