"""One feature spec per model version, built once from its manifest and the owner's schema.json: each feature's
kind, the value rules of that kind and the owner's bounds. The marshmallow row schema, the JSON Schema
(GET /models/<name>/schema and the OpenAPI component) and the fast column validator are all generated from it, so
a bound is written once, here or in app/values.py, and no view of a row can drift from another."""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property, partial
from typing import Any, Callable

import numpy as np
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from app.inference import tables
from app.inference.tables import SlowPath, Table
from app.schemas import FiniteFloat, IsoDateTime, StrippedString, WholeNumber
from app.values import DATETIME_MAX, DATETIME_MIN, FLOAT64_MAX, INT64_MAX, INT64_MIN, NUMBER_TEXT_MAX

# Owner-declared bounds in schema.json: {"features": {name: {minimum, maximum, enum, max_length}}}
BOUND_KEYS = {"minimum", "maximum", "enum", "max_length"}
SUSPECT_PART = 32  # values of a column the fast path judges together when finding the ones it cannot vouch for


def _digits(low: str, high: str) -> str:
    """A regular expression for the digit strings from low to high, both of the same length."""
    width = len(low)
    if low == high:
        return low
    if low == "0" * width and high == "9" * width:
        return r"\d" + (f"{{{width}}}" if width > 1 else "")
    if width == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return low[0] + _group(_digits(low[1:], high[1:]))
    rest = width - 1
    parts = [low[0] + _group(_digits(low[1:], "9" * rest))]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(_digits(str(int(low[0]) + 1), str(int(high[0]) - 1)) + _digits("0" * rest, "9" * rest))
    parts.append(high[0] + _group(_digits("0" * rest, high[1:])))
    return "|".join(parts)


def _group(pattern: str) -> str:
    return f"(?:{pattern})" if "|" in pattern else pattern


def _days_of_year(year: int, first: date, last: date) -> str:
    """MM-DD for the days of one year from first to last."""
    parts = []
    for month in range(first.month, last.month + 1):
        low = first.day if month == first.month else 1
        high = last.day if month == last.month else calendar.monthrange(year, month)[1]
        parts.append(f"{month:02d}-{_group(_digits(f'{low:02d}', f'{high:02d}'))}")
    return "|".join(parts)


TIME = r"(?:T(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?)?"
MIDNIGHT = r"(?:T00:00(?::00(?:\.0{1,6})?)?)?"
ANY_DAY = r"(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|02-(?:0[1-9]|1\d|2[0-8])"
LEAP_YEAR = r"\d\d(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00"


def naive_datetime_pattern(earliest: datetime, latest: datetime) -> str:
    """The canonical ISO 8601 texts of the naive date-times from earliest (a midnight) to latest (a midnight):
    YYYY-MM-DD, optionally THH:MM, :SS and up to six decimals, every calendar day and no other."""
    assert earliest.time() == latest.time() == datetime.min.time() and latest.year - earliest.year > 1
    first, last = earliest.date(), latest.date() - timedelta(days=1)
    years = _digits(f"{first.year + 1:04d}", f"{last.year - 1:04d}")
    dates = [f"{first.year}-(?:{_days_of_year(first.year, first, date(first.year, 12, 31))})",
             f"(?:{years})-(?:{ANY_DAY})",
             f"(?=(?:{years})-)(?:{LEAP_YEAR})-02-29",
             f"{last.year}-(?:{_days_of_year(last.year, date(last.year, 1, 1), last)})"]
    return f"^(?:(?:{'|'.join(dates)}){TIME}|{latest:%Y-%m-%d}{MIDNIGHT})$"


@dataclass(frozen=True)
class Kind:
    """What a feature kind accepts: its marshmallow field, the JSON Schema of its values, its column converter."""

    field: type[fields.Field]
    json: dict[str, Any]
    convert: Callable[[list[Any]], Any]


KINDS = {
    "numeric": Kind(FiniteFloat, {"type": "number", "minimum": -FLOAT64_MAX, "maximum": FLOAT64_MAX},
                    partial(tables.numbers, integral=False)),
    "integer": Kind(WholeNumber, {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
                    partial(tables.numbers, integral=True)),
    "boolean": Kind(fields.Boolean, {"type": "boolean"},
                    partial(tables.booleans, truthy=fields.Boolean.truthy, falsy=fields.Boolean.falsy)),
    "category": Kind(StrippedString, {"type": "string"}, tables.strings),
    # Local date-times, as trained: JSON Schema's "date-time" format (RFC 3339) would demand an offset
    "datetime": Kind(IsoDateTime, {"type": "string", "maxLength": NUMBER_TEXT_MAX,
                                   "pattern": naive_datetime_pattern(DATETIME_MIN, DATETIME_MAX)}, tables.datetimes),
    "text": Kind(StrippedString, {"type": "string"}, tables.strings),
}


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature: its kind, the owner's bounds and the kind's length cap (a setting)."""

    name: str
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    max_length: int | None = None
    length_cap: int | None = None  # AGSERVE_MAX_CATEGORY_LENGTH or AGSERVE_MAX_TEXT_LENGTH

    @property
    def longest(self) -> int | None:
        """The string length the feature accepts at most (the tighter of the cap and the owner's bound)."""
        caps = [n for n in (self.length_cap, self.max_length) if n is not None]
        return min(caps) if caps else None

    def field(self, required: bool) -> fields.Field:
        validators: list[validate.Validator] = []
        if self.length_cap is not None:
            validators.append(validate.Length(max=self.length_cap))
        if self.minimum is not None or self.maximum is not None:
            validators.append(validate.Range(min=self.minimum, max=self.maximum))
        if self.enum is not None:
            validators.append(validate.OneOf(self.enum))
        if self.max_length is not None:
            validators.append(validate.Length(max=self.max_length))
        return KINDS[self.kind].field(required=required, allow_none=True, validate=validators,
                                      metadata={"kind": self.kind})

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one value: the kind's rules narrowed by the owner's bounds; null is missing."""
        prop = dict(KINDS[self.kind].json)
        prop["type"] = [prop["type"], "null"]
        if self.minimum is not None:
            prop["minimum"] = max(self.minimum, prop.get("minimum", self.minimum))
        if self.maximum is not None:
            prop["maximum"] = min(self.maximum, prop.get("maximum", self.maximum))
        if self.enum is not None:
            prop["enum"] = list(self.enum) + [None]
        if self.longest is not None:
            prop["maxLength"] = min(self.longest, prop.get("maxLength", self.longest))
        prop["x-feature-kind"] = self.kind
        return prop

    def convert(self, values: list[Any]):
        """The typed column, or SlowPath when any value needs marshmallow's judgement (an error included)."""
        converted = KINDS[self.kind].convert(values)
        if self.minimum is None and self.maximum is None and self.enum is None and self.longest is None:
            return converted
        if isinstance(converted, np.ndarray):  # numbers: NaN is the fast path's missing value
            present = converted[~np.isnan(converted)].tolist()
        else:  # lists (text, booleans, date-times) mark a missing value with None only
            present = [v for v in converted if v is not None]
        if (self.minimum is not None and any(v < self.minimum for v in present)) or \
                (self.maximum is not None and any(v > self.maximum for v in present)) or \
                (self.enum is not None and not set(present).issubset(self.enum)) or \
                (self.longest is not None and max(map(len, present), default=0) > self.longest):
            raise SlowPath()
        return converted

    def suspects(self, values: list[Any]) -> list[int]:
        """The positions, in order, of the values convert cannot vouch for (all that marshmallow refuses are among
        them), found part by part: convert judges each value alone, so a part it accepts holds no refusal."""
        found = []
        for start in range(0, len(values), SUSPECT_PART):
            try:
                self.convert(values[start:start + SUSPECT_PART])
            except SlowPath:
                found.extend(range(start, min(start + SUSPECT_PART, len(values))))
        return found


@dataclass(frozen=True)
class RowSpec:
    """A model version's input row: its features in order, and what to do with unknown and missing ones."""

    model_name: str
    features: tuple[FeatureSpec, ...]
    unknown: str = "raise"
    missing: str = "raise"

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], bounds: Any = None, *, unknown: str = "raise",
                      missing: str = "raise", length_caps: dict[str, int] | None = None) -> "RowSpec":
        """The spec of a manifest's features; bounds is the owner's schema.json document (ValueError if wrong);
        length_caps caps the strings of a kind ({"category": 1024, "text": 65536})."""
        declared = check_bounds(bounds, manifest["features"]) if bounds is not None else {}
        caps = length_caps or {}
        features = []
        for feature in manifest["features"]:
            own = declared.get(feature["name"], {})
            features.append(FeatureSpec(feature["name"], feature["kind"], own.get("minimum"), own.get("maximum"),
                                        tuple(own["enum"]) if "enum" in own else None, own.get("max_length"),
                                        caps.get(feature["kind"])))
        return cls(manifest["name"], tuple(features), unknown, missing)

    @cached_property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def kinds(self) -> dict[str, str]:
        return {f.name: f.kind for f in self.features}

    def row_schema(self) -> Schema:
        """The marshmallow schema of one row: one field per feature; null is a missing value."""
        declared = {f.name: f.field(required=self.missing == "raise") for f in self.features}
        schema_class = Schema.from_dict(declared, name=f"{_identifier(self.model_name)}Row")
        return schema_class(unknown=RAISE if self.unknown == "raise" else EXCLUDE)

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one row (GET /models/<name>/schema)."""
        return {
            "type": "object",
            "properties": {f.name: f.json_schema() for f in self.features},
            "required": self.names if self.missing == "raise" else [],
            "additionalProperties": self.unknown != "raise",
        }

    def openapi_schema(self) -> dict[str, Any]:
        """The same row as an OpenAPI 3.0 component (nullable instead of type lists)."""
        schema = self.json_schema()
        for prop in schema["properties"].values():
            prop["type"], prop["nullable"] = prop["type"][0], True
        return schema

    def convert(self, table: Table) -> dict[str, Any]:
        """The fast column validator: typed columns, or SlowPath when any value needs marshmallow's judgement,
        naming the features that hold one (none when the table's columns are not the features)."""
        if set(table.columns) != set(self.names):
            raise SlowPath()
        columns, unvouched = {}, []
        for feature in self.features:
            try:
                columns[feature.name] = feature.convert(table.columns[feature.name])
            except SlowPath:
                unvouched.append(feature.name)
        if unvouched:
            raise SlowPath(*unvouched)
        return columns

    def refused_rows(self, table: Table, schema: Schema, unvouched: tuple[str, ...]) -> list[int] | None:
        """The rows, in order, that the schema (this spec's row schema) refuses, found by its fields judging only the
        values of the unvouched features (SlowPath's) that the fast validator cannot vouch for: the schema judges
        each row alone and each field alone. None when it cannot tell (the table's columns are not the features)."""
        if not unvouched:
            return None
        refused: set[int] = set()
        for feature in self.features:
            if feature.name in unvouched:
                column, judge, verdicts = table.columns[feature.name], schema.fields[feature.name], {}
                for position in feature.suspects(column):
                    if position not in refused and _refuses(judge, column[position], verdicts):
                        refused.add(position)
        return sorted(refused)


def _refuses(judge: fields.Field, value: Any, verdicts: dict[tuple[type, Any], bool]) -> bool:
    """Whether the field refuses the value. The field judges a value alone, so equal values of one type get one
    verdict, kept in verdicts: a column of 10,000 copies of one wrong value costs one call, not 10,000."""
    try:
        return verdicts[type(value), value]
    except TypeError:  # unhashable (a JSON list or object): judged each time
        return _refused_by(judge, value)
    except KeyError:
        verdict = verdicts[type(value), value] = _refused_by(judge, value)
        return verdict


def _refused_by(judge: fields.Field, value: Any) -> bool:
    if isinstance(value, str) and isinstance(judge, (FiniteFloat, WholeNumber)) and not _float_text(value):
        return True  # both refuse any text float() refuses, and marshmallow's error path costs 4 times the check
    try:
        judge.deserialize(value)
    except ValidationError:
        return True
    return False


def _float_text(text: str) -> bool:
    """Whether float() reads the text, or the text stripped as WholeNumber strips it (str.strip removes more)."""
    for candidate in (text, text.strip()):
        try:
            float(candidate)
            return True
        except ValueError:
            pass
    return False


def check_bounds(bounds: Any, features: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate a schema.json document against the features; return {feature: bounds}."""
    declared = bounds.get("features", {}) if isinstance(bounds, dict) else None
    if not isinstance(declared, dict):
        raise ValueError('schema.json must be {"features": {name: {...}}}')
    names = {f["name"] for f in features}
    for name, spec in declared.items():
        if name not in names:
            raise ValueError(f"schema.json names {name!r}, which is not a feature")
        if not isinstance(spec, dict) or set(spec) - BOUND_KEYS:
            raise ValueError(f"schema.json: bounds of {name!r} may only use {', '.join(sorted(BOUND_KEYS))}")
    return declared


def _identifier(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").replace(".", "_").split("_")) or "Model"
