"""JSON through orjson: several times faster than the standard library for large prediction answers."""
from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import JSONProvider

OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes | str) -> Any:
    """Parse JSON; what orjson refuses (NaN, Infinity, overflowing numbers) goes to the standard library,
    so that those literals reach the schema and are refused there as invalid values (422), not as bad JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class OrjsonProvider(JSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)

    def response(self, *args: Any, **kwargs: Any):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj, option=OPTIONS), mimetype="application/json")
