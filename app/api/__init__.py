"""HTTP blueprints: thin views that parse, call the model layer and shape the answer."""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError

from app.errors import ApiError
from app.inference import ModelRegistry


def served_models() -> ModelRegistry:
    return current_app.extensions["agserve.models"]


def read_json() -> Any:
    """The request body as JSON; 415 for another content type, 400 for anything that is not UTF-8 JSON."""
    if request.mimetype != "application/json":
        raise ApiError(415, "Content-Type must be application/json",
                       {"content_type": request.mimetype or None, "accepted": ["application/json"]})
    body = request.get_data(cache=False)
    limit = current_app.config["MAX_BODY_BYTES"]
    if len(body) > limit:
        raise ApiError(413, "request body too large", {"max_bytes": limit})
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError; deep nesting is not
        raise ApiError(400, "request body is not valid UTF-8 JSON", {"reason": type(exc).__name__}) from None


def load_body(schema: Schema) -> dict[str, Any]:
    """The JSON body validated by a marshmallow schema; 422 with its messages otherwise."""
    document = read_json()
    if not isinstance(document, dict):
        raise ApiError(422, "request body must be a JSON object", {"_schema": ["Invalid input type."]})
    try:
        return schema.load(document)
    except ValidationError as exc:
        raise ApiError(422, "request body does not match the schema", exc.messages) from None
