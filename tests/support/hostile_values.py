"""Hypothesis strategies for the value space a hostile client can reach, each value paired with what the server's
rules say it means: its canonical value (what AutoGluon must receive) or REFUSED.

The rules, as README states them: a number is a finite float64; an integer fits int64 (integral floats and
integer text included, never through a rounding float); strings are Unicode scalar values, stripped, at most the
kind's length; booleans are true/false (or marshmallow's documented spellings); date-times are naive ISO 8601
between 1677-09-22 and 2262-04-11; null (in CSV an empty cell, in V2 also NaN and "") is missing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st
from marshmallow import fields

REFUSED = object()
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
CATEGORY_MAX, TEXT_MAX = 200, 2000  # the property server's AGSERVE_MAX_CATEGORY_LENGTH / AGSERVE_MAX_TEXT_LENGTH
MAX_COLUMNS = 32  # its AGSERVE_MAX_COLUMNS
KINDS = {"num": "numeric", "cnt": "integer", "color": "category", "flag": "boolean", "when": "datetime",
         "note": "text"}
EARLIEST, LATEST = datetime(1677, 9, 22), datetime(2262, 4, 11)


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim (NaN, 1e999, a 400-digit literal, deep nesting)."""

    text: str


@dataclass(frozen=True)
class Value:
    wire: Any  # what is sent: a JSON-able Python value, a Raw token, or (CSV) the cell's text
    canonical: Any  # what the rules make of it, or REFUSED

    @property
    def refused(self) -> bool:
        return self.canonical is REFUSED


def dump(obj: Any, ascii_only: bool = True) -> str:
    """JSON text; a list of (key, value) pairs in a Pairs object keeps duplicated keys."""
    if isinstance(obj, Raw):
        return obj.text
    if isinstance(obj, Pairs):
        return "{" + ",".join(f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in obj.items) + "}"
    if isinstance(obj, dict):
        return dump(Pairs(list(obj.items())), ascii_only)
    if isinstance(obj, list):
        return "[" + ",".join(dump(v, ascii_only) for v in obj) + "]"
    if isinstance(obj, float):
        return repr(obj)  # shortest round-trip text
    return json.dumps(obj, ensure_ascii=ascii_only)  # a lone surrogate: an escape, or (not ascii) raw bytes


@dataclass
class Pairs:
    items: list[tuple[Any, Any]]


def body(obj: Any, ascii_only: bool) -> bytes:
    return dump(obj, ascii_only).encode("utf-8", "surrogatepass")


# --- pieces ---------------------------------------------------------------------------------------------------------
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
CONTROL = st.sampled_from(["\x00", "\x01", "\x07", "\t", "\n", "\r", "\x0b", "\x1b", "\x7f", "\x85", "\u2028",
                           "\ufeff", "\u200b", "\U0010ffff", "\U0001f600"])
TEXT = st.one_of(st.text(max_size=12), st.text(st.sampled_from("ab \t"), max_size=5),
                 st.lists(st.one_of(CONTROL, st.text(max_size=3)), max_size=5).map("".join))


def with_surrogate(text: str, surrogate: str, at: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + surrogate + text[at:]


SURROGATE_TEXT = st.builds(with_surrogate, TEXT, SURROGATES, st.integers(0, 20))
NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400,
                              "-" + "9" * 400]).map(Raw)
DEEP = st.integers(2, 3000).map(lambda depth: Raw("[" * depth + "1" + "]" * depth))
WRONG_SHAPES = st.one_of(DEEP, st.just([]), st.just({}), st.just({"a": 1}), st.lists(st.integers(), min_size=1,
                                                                                      max_size=3))


def refused(strategy) -> st.SearchStrategy:
    return strategy.map(lambda wire: Value(wire, REFUSED))


def _float_value(number: float) -> Value:
    return Value(number, number)


def _int_as_number(number: int) -> Value:
    try:
        return Value(number, float(number))
    except OverflowError:
        return Value(number, REFUSED)


def _int64(number: int) -> Value:
    return Value(number, number if INT64_MIN <= number <= INT64_MAX else REFUSED)


def _integral_float(number: float) -> Value:
    """A float stands for an integer only strictly inside ±2**63 (orjson turns integer literals below -2**63
    into the float -2**63, so that float cannot be trusted to mean itself)."""
    if not number.is_integer():
        return Value(number, REFUSED)
    return Value(number, int(number) if -(2.0 ** 63) < number < 2.0 ** 63 else REFUSED)


def _integer_text(number: int, pad: str) -> Value:
    return Value(f"{pad}{number}{pad}", number if INT64_MIN <= number <= INT64_MAX else REFUSED)


def _string(text: str, limit: int) -> Value:
    stripped = text.strip()
    return Value(text, stripped if len(stripped) <= limit else REFUSED)


def _boolean_text(text: str) -> Value:
    if text in fields.Boolean.truthy:
        return Value(text, True)
    return Value(text, False if text in fields.Boolean.falsy else REFUSED)


def _moment(moment: datetime, form: str) -> Value:
    text = {"T": moment.isoformat(), " ": moment.isoformat(" "), "date": moment.date().isoformat(),
            "minutes": moment.isoformat(timespec="minutes")}[form]
    canonical = datetime.fromisoformat(text)
    return Value(text, canonical if EARLIEST <= canonical <= LATEST else REFUSED)


BIG_INTS = st.one_of(st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, 2 ** 53 + 1, -1, 0]))
OUTSIDE_INT64 = st.one_of(st.integers(INT64_MAX + 1, 2 ** 64 + 5), st.integers(-(2 ** 64), INT64_MIN - 1),
                          st.integers(2 ** 64, 10 ** 400),
                          st.sampled_from([2 ** 63, 2 ** 64 - 1, 10 ** 20, INT64_MIN - 1, INT64_MIN - 1000]))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
INTEGRAL_FLOATS = FLOATS.map(lambda f: float(math.floor(f)))  # mostly far outside int64, some inside


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, drawn in proportion to its weight (st.one_of draws its branches evenly)."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)
DATETIMES = st.datetimes(EARLIEST, LATEST)
FORMS = st.sampled_from(["T", " ", "date", "minutes"])

VALID = {
    "numeric": st.one_of(FLOATS.map(_float_value), st.sampled_from([5e-324, -0.0, 1.7976931348623157e308,
                                                                     2.2250738585072014e-308]).map(_float_value),
                         st.integers(-(2 ** 64), 2 ** 64).map(_int_as_number),
                         FLOATS.map(lambda f: Value(f" {f!r} ", f))),
    "integer": st.one_of(BIG_INTS.map(_int64), st.integers(-(2 ** 53), 2 ** 53).map(lambda n: Value(float(n), n)),
                         st.builds(_integer_text, BIG_INTS, st.sampled_from(["", " "]))),
    "category": TEXT.map(lambda t: _string(t, CATEGORY_MAX)),
    "boolean": st.booleans().map(lambda b: Value(b, b)),
    "datetime": st.builds(_moment, DATETIMES, FORMS),
    "text": TEXT.map(lambda t: _string(t, TEXT_MAX)),
}
HOSTILE = {
    "numeric": st.one_of(refused(NON_FINITE), refused(st.sampled_from(["", "abc", "1e999", "NaN", "0x10", "9" * 400,
                                                                         True, False])),
                         st.integers(10 ** 300, 10 ** 400).map(_int_as_number), refused(WRONG_SHAPES),
                         refused(SURROGATE_TEXT)),
    "integer": weighted((3, OUTSIDE_INT64.map(_int64)), (3, INTEGRAL_FLOATS.map(_integral_float)),
                        # the edges, where orjson turns an integer literal into a float
                        (3, st.sampled_from([INT64_MIN - 1, INT64_MIN - 1024, INT64_MAX + 1, 2 ** 64 - 1])
                         .map(_int64)),
                        (1, FLOATS.map(_integral_float)), (1, refused(NON_FINITE)),
                        (2, st.sampled_from([1e19, 1e20, 9.223372036854776e18, -9.223372036854776e18, -9.3e18, 3.5])
                         .map(_integral_float)),
                        (2, st.builds(_integer_text, OUTSIDE_INT64.filter(lambda n: len(str(n)) < 60),
                                      st.sampled_from(["", " "]))),
                        (1, refused(st.sampled_from(["", "3.5", "x", "9" * 400, True, False]))),
                        (1, refused(WRONG_SHAPES)), (1, refused(SURROGATE_TEXT))),
    "category": st.one_of(refused(SURROGATE_TEXT), refused(st.one_of(FLOATS, st.integers(), st.booleans(),
                                                                       WRONG_SHAPES)),
                          st.integers(CATEGORY_MAX - 2, CATEGORY_MAX + 2).map(lambda n: _string("c" * n, CATEGORY_MAX)),
                          st.just(Value("x" * 100_000, REFUSED))),
    "boolean": st.one_of(st.sampled_from(["true", "False", "yes", "1", "0", "maybe", "", "TRUE ", 2, 1.0, 0])
                         .map(lambda v: _boolean_text(v) if isinstance(v, str) else
                              Value(v, bool(v) if v in (0, 1) else REFUSED)),
                         refused(WRONG_SHAPES), refused(NON_FINITE), refused(SURROGATE_TEXT)),
    "datetime": st.one_of(st.builds(_moment, st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)), FORMS),
                          refused(DATETIMES.map(lambda d: d.replace(tzinfo=timezone(timedelta(hours=2))).isoformat())),
                          refused(st.sampled_from(["soon", "", "2024-13-01", "2024-01-01T25:00", "1" * 100, 20240101])),
                          refused(SURROGATE_TEXT), refused(WRONG_SHAPES)),
    "text": st.one_of(refused(SURROGATE_TEXT), refused(st.one_of(FLOATS, st.integers(), WRONG_SHAPES)),
                      st.integers(TEXT_MAX - 2, TEXT_MAX + 2).map(lambda n: _string("word " * (n // 5) + "w" * (n % 5),
                                                                                     TEXT_MAX)),
                      st.just(Value("x" * 200_000, REFUSED))),
}


def row_values(kind_values: dict[str, Any]) -> st.SearchStrategy:
    """{feature: Value} for every feature, each from the given kind strategies."""
    return st.fixed_dictionaries({name: kind_values[kind] for name, kind in KINDS.items()})


ROW = row_values(VALID)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- V2 tensors: the same values, under the protocol's stricter types (NaN and "" are missing) -----------------------
def v2_value(kind: str, value: Value) -> Value:
    wire = value.wire
    if wire is None or (isinstance(wire, Raw) and wire.text == "NaN" and kind in ("numeric", "integer")):
        return Value(wire, None)
    if kind in ("numeric", "integer"):
        ok = isinstance(wire, (int, float)) and not isinstance(wire, bool) or isinstance(wire, Raw)
    elif kind == "boolean":
        ok = isinstance(wire, bool)
    else:
        if wire == "":
            return Value(wire, None)
        ok = isinstance(wire, str)
    return value if ok else Value(wire, REFUSED)


# --- CSV cells: text only; an empty cell is missing ------------------------------------------------------------------
def _cell(text: str, canonical: Any) -> Value:
    if "\x00" in text:  # refused in CSV: pandas would cut the cell there
        return Value(text, REFUSED)
    return Value(text, None if text == "" else canonical)


def _number_cell(text: str) -> Value:
    return _cell(text, float(text))


CSV_VALID = {
    "numeric": st.one_of(FLOATS.map(lambda f: _number_cell(repr(f))), st.just(_cell("", None)),
                         st.integers(-(2 ** 64), 2 ** 64).map(lambda n: _cell(str(n), float(n)))),
    "integer": st.one_of(BIG_INTS.map(lambda n: _cell(str(n), n)), st.just(_cell("", None)),
                         st.integers(-(2 ** 53), 2 ** 53).map(lambda n: _cell(repr(float(n)), n))),
    "category": TEXT.map(lambda t: _cell(t, _string(t, CATEGORY_MAX).canonical)),
    "boolean": st.sampled_from(["True", "False", "true", "false", "1", "0", "yes", "no", ""])
    .map(lambda t: _cell(t, _boolean_text(t).canonical)),
    "datetime": st.one_of(st.builds(_moment, DATETIMES, FORMS), st.just(_cell("", None))),
    "text": TEXT.map(lambda t: _cell(t, _string(t, TEXT_MAX).canonical)),
}
CSV_HOSTILE = {
    "numeric": refused(st.one_of(st.sampled_from(["NaN", "nan", "inf", "-Infinity", "1e999", "9" * 400, "abc",
                                                  "0x10", "1,5"]), SURROGATE_TEXT)),
    "integer": st.one_of(OUTSIDE_INT64.filter(lambda n: len(str(n)) < 60).map(lambda n: _cell(str(n), REFUSED)),
                         refused(st.sampled_from(["3.5", "1e20", "9223372036854775808", "NaN", "x", "9" * 400])),
                         refused(SURROGATE_TEXT)),
    "category": st.one_of(refused(SURROGATE_TEXT), st.just(Value("x" * 100_000, REFUSED))),
    "boolean": st.one_of(refused(st.sampled_from(["maybe", "2", "TRUE "])), refused(SURROGATE_TEXT)),
    "datetime": st.one_of(st.builds(_moment, st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)), FORMS),
                          refused(st.sampled_from(["soon", "2024-01-01T00:00:00+02:00", "1" * 100])),
                          refused(SURROGATE_TEXT)),
    "text": st.one_of(refused(SURROGATE_TEXT), st.just(Value("x" * 200_000, REFUSED))),
}


# --- the reference: the canonical values typed as a pandas client would, for AutoGluon in-process -------------------
def reference_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    data = {}
    for name, kind in KINDS.items():
        values = [row[name] for row in rows]
        missing = any(v is None for v in values)
        if kind == "numeric":
            data[name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        elif kind == "integer":  # pandas' exact integers with gaps: a float64 column would round 2**63 - 1 up
            data[name] = pd.array(values, dtype="Int64") if missing else np.array(values, dtype="int64")
        elif kind == "boolean":
            data[name] = pd.array(values, dtype="object") if missing else np.array(values, dtype=bool)
        elif kind == "datetime":
            data[name] = pd.Series([pd.NaT if v is None else pd.Timestamp(v) for v in values], dtype="datetime64[ns]")
        else:
            data[name] = pd.array(values, dtype="object")
    return pd.DataFrame(data)
