"""The fast column-wise validation agrees with the marshmallow schema on every value it accepts."""
from __future__ import annotations

import math
import random
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.inference.features import RowSpec
from app.inference.tables import (PLAIN_DATETIME, CsvText, SlowPath, Table, all_match, numbers, parsed_floats,
                                  table_from_records)
from app.schemas import validate_rows
from app.values import DATETIME_TEXT

FEATURES = [{"name": "num", "kind": "numeric"}, {"name": "cnt", "kind": "integer"},
            {"name": "color", "kind": "category"}, {"name": "flag", "kind": "boolean"},
            {"name": "when", "kind": "datetime"}, {"name": "note", "kind": "text"}]
CANDIDATES = [None, 0, 1, -7, 3.0, 3.5, 1e300, 10 ** 400, float("inf"), float("nan"), True, False, "", " ", "1",
              "3.0", "3.5", " 2 ", "1e3", "1_000", "inf", "nan", "abc", "true", "False", "yes", "off", "T",
              "2024-01-02", "2024-01-02T03:04:05Z", " 2024-05-06T07:08:09+02:00 ", "2024-13-01", "red",
              "  padded  ", [1], {"a": 1}, 2 ** 60]

LIKELY = {
    "numeric": [None, 0, 1, -7, 3.0, 3.5, 1e300, 2 ** 60, -0.0],
    "integer": [None, 0, 1, -7, 3.0, 2 ** 60, 2 ** 53 + 1],
    "category": [None, "red", "  padded  ", "", "1"],
    "boolean": [None, True, False],
    "datetime": [None, "2024-01-02", "2024-01-02T03:04:05", " 2024-05-06T07:08:09 "],
    "text": [None, "a b c", " x ", ""],
}


def draw(rng, kind):
    return rng.choice(LIKELY[kind]) if rng.random() < 0.93 else rng.choice(CANDIDATES)


def canonical(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


@pytest.mark.parametrize("bounds", [None, {"num": {"minimum": -5, "maximum": 5}, "color": {"enum": ["red", "1"]},
                                           "note": {"max_length": 3}}])
def test_fast_path_accepts_only_what_marshmallow_accepts_and_converts_the_same(bounds):
    validator = RowSpec.from_manifest({"name": "m", "features": FEATURES},
                                      None if bounds is None else {"features": bounds})
    schema = validator.row_schema()
    rng = random.Random(7)
    accepted_fast = 0
    for _ in range(3000):
        rows = [{f["name"]: draw(rng, f["kind"]) for f in FEATURES} for _ in range(rng.randint(1, 3))]
        table = table_from_records(rows, [f["name"] for f in FEATURES])
        try:
            fast = validator.convert(table)
        except SlowPath:
            continue
        accepted_fast += 1
        expected = validate_rows(schema, rows)  # raises if marshmallow refuses what the fast path took
        for name, column in fast.items():
            values = column.tolist() if isinstance(column, np.ndarray) else column
            want = [row[name] for row in expected]
            if FEATURES[[f["name"] for f in FEATURES].index(name)]["kind"] in ("numeric", "integer"):
                want = [float("nan") if v is None else float(v) for v in want]
            assert list(map(canonical, values)) == list(map(canonical, want)), (name, rows)
    assert accepted_fast > 100


def test_values_the_fast_path_refuses_get_marshmallows_verdict():
    validator = RowSpec.from_manifest({"name": "m", "features": FEATURES})
    schema = validator.row_schema()
    rows = [{"num": "1_000", "cnt": "3.0", "color": "x", "flag": 1, "when": "2024-01-01", "note": None}]
    with pytest.raises(SlowPath):
        validator.convert(table_from_records(rows, [f["name"] for f in FEATURES]))
    assert validate_rows(schema, rows)[0] == {"num": 1000.0, "cnt": 3, "color": "x", "flag": True,
                                              "when": "2024-01-01", "note": None}
    with pytest.raises(ValidationError):
        validate_rows(schema, [dict(rows[0], cnt="3.5")])


def test_csv_text_is_converted_column_wise():
    spec = RowSpec.from_manifest({"name": "m", "features": FEATURES})
    table = Table({"num": ["1.5", None, " 2 "], "cnt": ["3", "4.0", None], "color": [" red", "blue", None],
                   "flag": ["true", "0", None], "when": ["2024-01-01", None, "2024-02-03T04:05:06"],
                   "note": ["a b", None, "c"]}, 3)
    columns = spec.convert(table)
    assert columns["num"].tolist()[0] == 1.5 and math.isnan(columns["num"][1]) and columns["num"][2] == 2.0
    assert columns["cnt"].tolist()[:2] == [3.0, 4.0] and columns["color"] == ["red", "blue", None]
    assert columns["flag"] == [True, False, None]


# Text near numbers: what float() reads and pyarrow may not (spaces, underscores, non-ASCII digits, infinities),
# float64's edges and halfway cases written out in full, and longer than any number the fast path reads.
NUMBER_TEXT = (st.text(alphabet="0123456789.eE+-_ \t\n\xa0\u2003٣infatyINFATY", max_size=12)
               | st.floats().map(repr) | st.floats().map(lambda x: f"{x:.40g}")
               | st.integers(-2 ** 70, 2 ** 70).map(str) | st.text(alphabet="0123456789", min_size=60, max_size=70)
               | st.sampled_from(["2.2250738585072011e-308", "9007199254740993", "1.7976931348623159e308",
                                  "0.1000000000000000055511151231257827", "-0", "+.5", "1.", "١٢", "1e-400"]))


def number_outcome(values, integral):
    try:
        array = numbers(values, integral)
    except SlowPath:
        return "slow"
    return np.where(np.isnan(array), np.nan, array).tobytes()  # one NaN: pyarrow's and np.nan may differ in bits


@given(st.lists(st.none() | NUMBER_TEXT, min_size=1, max_size=6), st.booleans())
@settings(max_examples=1500, deadline=None)
@example(["1.5", None, "-0"], False)
def test_numbers_parsed_by_pyarrow_are_float_s(cells, integral):
    """CSV cells parsed by pyarrow give float()'s numbers to the bit, or go to float() (then marshmallow)."""
    floats = parsed_floats(pa.chunked_array([pa.array(cells, type=pa.string())]))
    if cells == ["1.5", None, "-0"]:
        assert floats is not None  # the plain case is pyarrow's
    assert number_outcome(CsvText(cells, floats), integral) == number_outcome(list(cells), integral)


# Texts near the date-time patterns: digits (ASCII and others), separators, line breaks, spaces, zones.
PATTERN_TEXT = st.text(alphabet="0123456789٣-:.T Z+\n\r", max_size=24) | st.sampled_from(
    ["2024-01-02", "2024-01-02T03:04:05.123456789", "20240102 03:04", "2024-01-02\n2024-01-03", ""])


@settings(max_examples=800, deadline=None, derandomize=True)
@given(st.lists(PATTERN_TEXT, max_size=8), st.sampled_from([DATETIME_TEXT, PLAIN_DATETIME]))
def test_one_scan_over_joined_texts_decides_as_one_match_per_text(texts, pattern):
    assert all_match(pattern, texts) == all(pattern.fullmatch(text) for text in texts), texts


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.none(), st.sampled_from(LIKELY["datetime"] + LIKELY["category"]), PATTERN_TEXT,
                          st.datetimes(min_value=datetime(1, 1, 1)).map(datetime.isoformat),
                          st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat),
                          st.integers(), st.floats(), st.text(max_size=5)), min_size=1, max_size=40))
@example(["2024-01-02", None, " 2024-05-06T07:08:09 ", "20240102 03:04:05.5"])  # one the fast path takes
def test_whole_column_date_times_and_text_accept_only_what_marshmallow_accepts(values):
    """The column-at-once checks (one regex scan, min/max of the moments, C-speed strip) against the row schema."""
    spec = RowSpec.from_manifest({"name": "m", "features": [{"name": "when", "kind": "datetime"},
                                                            {"name": "note", "kind": "text"}]})
    rows = [{"when": value, "note": value} for value in values]
    table = table_from_records(rows, ["when", "note"])
    for name in ("when", "note"):
        try:
            fast = spec.features[0 if name == "when" else 1].convert(table.columns[name])
        except SlowPath:
            continue
        expected = validate_rows(spec.row_schema(), [{name: v, **{other: None for other in ("when", "note")
                                                                  if other != name}} for v in values])
        assert fast == [row[name] for row in expected], values
