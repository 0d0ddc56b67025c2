"""Marshmallow: the value fields a model's row schema is made of (app/inference/features.py builds it from the
feature spec), and the request and response bodies of the other routes."""
from __future__ import annotations

import math
import re
import traceback
from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from app.values import (DATETIME_MAX, DATETIME_MIN, DATETIME_TEXT, INT64_MAX, INT64_MIN, NUMBER_TEXT_MAX, SCOPES,
                        fits_int64, parse_duration)


class StrippedString(fields.String):
    """A string with surrounding whitespace removed."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


class WholeNumber(fields.Integer):
    """A 64-bit integer; 3, 3.0, "3" and "3.0" are accepted, 3.5 is refused (marshmallow would truncate it), and so
    is anything int64 cannot hold (AutoGluon would get a wrapped value). Integer text is read exactly, never
    through a float."""

    default_error_messages = {"range": f"Not an integer a 64-bit integer can hold ({INT64_MIN} to {INT64_MAX})."}

    def _validated(self, value):
        if isinstance(value, str):
            value = _number_text(self, value.strip())
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid")
        if isinstance(value, float) and not -INT64_LIMIT < value < INT64_LIMIT:
            raise self.make_error("range")  # -2**63 too: it is what orjson makes of any integer literal below it
        number = super()._validated(value)
        if number is not None and not fits_int64(number):
            raise self.make_error("range")
        return number


def _number_text(field: fields.Number, text: str) -> int | float:
    """The number a text holds: an exact int for integer digits, else a finite float; "invalid" otherwise."""
    if len(text) > NUMBER_TEXT_MAX:
        raise field.make_error("invalid")
    if INTEGER_TEXT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise field.make_error("invalid") from None
    if not math.isfinite(number):
        raise field.make_error("invalid")
    return number


INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
INT64_LIMIT = 2.0 ** 63


class FiniteFloat(fields.Float):
    """A finite float (NaN, Infinity and numbers no float64 holds, such as 1e999, are refused)."""

    default_error_messages = {"special": "Not a finite number a float64 can hold (NaN, Infinity and overflowing "
                                         "numbers such as 1e999 are refused)."}

    def __init__(self, **kwargs):
        super().__init__(allow_nan=False, **kwargs)

    def _validated(self, value):
        if isinstance(value, str) and len(value) > NUMBER_TEXT_MAX:
            raise self.make_error("invalid")
        try:
            number = super()._validated(value)
        except OverflowError:  # an int past float64 (JSON ints are already floats by then; this is a last guard)
            raise self.make_error("special") from None
        if number is not None and not math.isfinite(number):
            raise self.make_error("special")
        return number


class IsoDateTime(StrippedString):
    """An ISO 8601 date or date-time without a time zone, as AutoGluon's datetime features are trained
    (AutoGluon fails on zoned values for them)."""

    default_error_messages = {
        "datetime": "Not a valid ISO 8601 date or date-time.",
        "zoned": "Time zone offsets are not accepted: send the local date-time, as in training.",
        "range": f"Date-times must lie between {DATETIME_MIN:%Y-%m-%d} and {DATETIME_MAX:%Y-%m-%d} "
                 "(what pandas can hold)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > NUMBER_TEXT_MAX:
            raise self.make_error("datetime")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("datetime") from None
        if moment.tzinfo is not None:
            raise self.make_error("zoned")
        if not DATETIME_MIN <= moment <= DATETIME_MAX:  # AutoGluon would fail converting it to datetime64[ns]
            raise self.make_error("range")
        if not DATETIME_TEXT.fullmatch(text):
            raise self.make_error("datetime")
        return text


def messages_of(error: ValidationError) -> dict[str, Any]:
    """The error's messages, after dropping the locals of the frames it was raised from: marshmallow raises it
    from a local of its own frame, a cycle that would keep every row (a 32 MiB body's) until the next full GC."""
    traceback.clear_frames(error.__traceback__)
    return error.messages


def validate_rows(schema: Schema, rows: list[Any]) -> list[dict[str, Any]]:
    """Validated rows, or ValidationError whose messages are {row index: {field: [messages]}}."""
    not_objects = {i: {"_schema": ["Each row must be a JSON object."]} for i, row in enumerate(rows)
                   if not isinstance(row, dict)}
    if not_objects:
        raise ValidationError(not_objects)
    return schema.load(rows, many=True)


class StrictSchema(Schema):
    """Request bodies refuse keys they do not know."""

    class Meta:
        unknown = RAISE


def _duration(value: str) -> None:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None




class KeyRequest(StrictSchema):
    """POST /admin/keys"""

    owner = StrippedString(required=True, validate=validate.Length(min=1, max=200))
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True,
                         validate=validate.Length(min=1, max=len(SCOPES)))
    expires_in = fields.String(load_default=None, validate=_duration, metadata={"example": "30d"})


class TokenRequest(StrictSchema):
    """POST /admin/tokens"""

    sub = StrippedString(required=True, validate=validate.Length(min=1, max=200))
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True,
                         validate=validate.Length(min=1, max=len(SCOPES)))
    ttl = fields.String(load_default="15m", validate=_duration)


class PromoteRequest(StrictSchema):
    """POST /admin/models/<name>/promote"""

    version = fields.String(required=True, validate=validate.Length(min=1, max=64))
    force = fields.Boolean(load_default=False)


_PREDICTION_ID = validate.Regexp(r"^[A-Za-z0-9._:-]{1,128}:\d{1,9}$", error="Not a prediction id (<request_id>:<row>).")


class FeedbackItem(StrictSchema):
    """One outcome: {"prediction_id": "<request_id>:<row>", "actual": ...} or {"request_id": ..., "actual": ...}
    (a list of actual values, one per row, when that request had several rows)."""

    request_id = fields.String(validate=validate.Length(min=1, max=128))
    prediction_id = fields.String(validate=_PREDICTION_ID)
    actual = fields.Raw(required=True, allow_none=False)

    @validates_schema
    def _one_id(self, data, **kwargs):
        if ("request_id" in data) == ("prediction_id" in data):
            raise ValidationError("Give exactly one of request_id or prediction_id.", "_schema")


class FeedbackBatch(StrictSchema):
    """POST /feedback with several outcomes at once: {"feedback": [item, ...]}"""

    feedback = fields.List(fields.Nested(FeedbackItem), required=True, validate=validate.Length(min=1))


# --- Response shapes, for the OpenAPI document (views build their answers directly) ------------------------------
class ErrorResponse(Schema):
    """Every error: a message, structured details, and the request id to quote."""

    error = fields.String(required=True)
    details = fields.Dict(required=True)
    request_id = fields.String(required=True, allow_none=True)


class ModelInfo(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    problem_type = fields.String(required=True)
    eval_metric = fields.String(required=True)


class PredictionResponse(Schema):
    """POST /predict: one prediction per row; class probabilities for classifiers (null otherwise)."""

    predictions = fields.List(fields.Raw(), required=True)
    probabilities = fields.List(fields.Dict(keys=fields.String(), values=fields.Float()), required=True,
                                allow_none=True)
    model_info = fields.Nested(ModelInfo, required=True)
    timestamp = fields.String(required=True)
    request_id = fields.String(required=True)


class FeedbackResponse(Schema):
    accepted = fields.Integer(required=True)
    prediction_ids = fields.List(fields.String(), required=True)
    request_id = fields.String(required=True)
