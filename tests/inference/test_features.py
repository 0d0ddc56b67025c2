"""The one feature spec: the fast column validator, the marshmallow row schema and the JSON Schema generated from it
agree on random rows (Hypothesis; tests/support/feature_rows.py draws them), with the kinds' rules alone and with an
owner's bounds and the length caps."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from marshmallow import ValidationError

from app.inference.errors import InvalidInput
from app.inference.features import SUSPECT_PART, RowSpec
from app.inference.served import ServedModel
from app.inference.tables import SlowPath, Table, columns_from_rows, table_from_records
from app.schemas import validate_rows
from tests.support.feature_rows import BOUNDARIES, KINDS, LENIENT_BOUNDARIES, rows, schema_can_judge

FEATURES = [{"name": name, "kind": kind} for name, kind in KINDS.items()]
CAPS = {"category": 6, "text": 9}  # small, so that random strings cross them
BOUNDS = {"features": {"num": {"minimum": -5, "maximum": 5.5}, "cnt": {"minimum": -3, "maximum": 1000},
                       "color": {"enum": ["red", "blue", "1", ""]}, "note": {"max_length": 4}}}
SPECS = {"kinds only": RowSpec.from_manifest({"name": "m", "features": FEATURES}),
         "caps only": RowSpec.from_manifest({"name": "m", "features": FEATURES}, length_caps=CAPS),
         "bounds and caps": RowSpec.from_manifest({"name": "m", "features": FEATURES}, BOUNDS, length_caps=CAPS)}
ROW_SCHEMAS = {name: spec.row_schema() for name, spec in SPECS.items()}
JSON_SCHEMAS = {name: Draft202012Validator(spec.json_schema()) for name, spec in SPECS.items()}
CONFIGURED = settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def marshmallow_columns(spec_name: str, drawn: list[dict[str, Any]]) -> dict[str, list[Any]] | None:
    """What the spec's marshmallow row schema makes of the rows, as columns; None when it refuses them."""
    try:
        return columns_from_rows(validate_rows(ROW_SCHEMAS[spec_name], drawn), SPECS[spec_name].names)
    except ValidationError:
        return None


def as_values(column) -> list[Any]:
    """A column as comparable values: NaN (the fast path's missing number) as None, numbers as floats."""
    values = column.tolist() if isinstance(column, np.ndarray) else list(column)
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else
            float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]


def csv_table(drawn: list[dict[str, Any]]) -> Table:
    """The rows as the CSV decoder hands them over: text cells, None for an empty one."""
    return Table({name: [None if row.get(name) is None else str(row[name]) for row in drawn] for name in KINDS},
                 len(drawn))


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_the_fast_path_and_marshmallow_agree_on_random_rows(spec_name):
    """Whatever the fast path accepts, marshmallow accepts with the same values; a refusal by either is the
    other's refusal too (the fast path refuses nothing itself: it hands the rows to marshmallow)."""
    spec = SPECS[spec_name]
    fast_rows = []

    @settings(CONFIGURED, max_examples=1000)  # a row reaches the fast path only when no value is odd: about 1 in 8
    @given(rows(lenient=True, max_rows=2), st.booleans())
    def check(drawn, as_csv):
        table = csv_table(drawn) if as_csv and all(row.keys() == KINDS.keys() for row in drawn) else \
            table_from_records(drawn, spec.names)
        try:
            fast = spec.convert(table)
        except SlowPath:
            return
        fast_rows.append(len(drawn))
        slow = marshmallow_columns(spec_name, table.rows())
        assert slow is not None, f"the fast path accepted rows marshmallow refuses: {table.rows()}"
        for name in spec.names:
            assert as_values(fast[name]) == as_values(slow[name]), (name, table.rows())
            if KINDS[name] == "integer":
                assert all(v is None or v.is_integer() for v in as_values(fast[name]))

    check()
    assert len(fast_rows) > 60, f"too few random rows reached the fast path to show anything: {len(fast_rows)}"


def served(spec_name: str) -> ServedModel:
    manifest = {"name": "m", "features": FEATURES, "problem_type": "binary", "eval_metric": "accuracy"}
    return ServedModel("m", "1", manifest, None, SPECS[spec_name])


def answer(validate, *args) -> tuple[str, dict[str, Any]] | None:
    """The 422 (message, details) of a validation, or None when it accepts."""
    try:
        validate(*args)
    except InvalidInput as exc:
        return exc.message, exc.details
    return None


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_judging_only_the_suspect_rows_gives_the_refusal_of_judging_every_row(spec_name):
    """Tables of up to 150 random rows (several of the fast path's parts; past the 100 rows a 422 describes), as
    records or CSV columns: the rows the fast path's parts and marshmallow's fields name are exactly the rows
    marshmallow refuses judging every row, and the request's 422 is, message and details, the one of judging every
    row (an acceptance stays judged whole)."""
    spec, model, judged = SPECS[spec_name], served(spec_name), []

    @settings(CONFIGURED, max_examples=100, derandomize=True)  # the coverage count below is then stable
    @given(st.lists(rows(lenient=True, max_rows=6), min_size=1, max_size=25).map(lambda parts: sum(parts, [])),
           st.booleans())
    def check(drawn, as_csv):
        table = csv_table(drawn) if as_csv and all(row.keys() == KINDS.keys() for row in drawn) else \
            table_from_records(drawn, spec.names)
        whole = answer(model.validate, table.rows())
        assert answer(model.validate_table, table) == whole, table.rows()
        try:
            spec.convert(table)
            return
        except SlowPath as slow:
            refused = spec.refused_rows(table, model.schema, slow.args)
        if refused is not None:
            assert refused == sorted(int(i) for i in whole[1]["rows"]) if whole and whole[1]["invalid_rows"] <= 100 \
                else len(refused) == (whole[1]["invalid_rows"] if whole else 0), table.rows()
            judged.append(len(refused) < len(drawn))

    check()
    assert sum(judged) >= 15, f"too few tables were judged by their suspect rows alone: {sum(judged)}"


@pytest.mark.parametrize("refused", [[6_001], list(range(0, 10_000, 3))], ids=["one row", "every third row"])
def test_refused_values_among_many_rows_send_only_their_parts_to_marshmallow(monkeypatch, refused):
    """Bad numbers in 10,000 rows: marshmallow's field judges the values of the parts that hold them, its schema the
    reported rows alone (at most 100), and the 422 is the one of judging all 10,000 rows, count of refusals included."""
    model, sizes = served("kinds only"), []
    rows_ = [dict(GOOD, num=i / 7) for i in range(10_000)]
    for i in refused:
        rows_[i]["num"] = "n/a"
    table = table_from_records(rows_, model.feature_names)
    whole = answer(model.validate, table.rows())
    judge = model.schema.fields["num"]
    values = []
    monkeypatch.setattr(judge, "deserialize", lambda value, *a, **k: values.append(value) or type(judge).deserialize(
        judge, value, *a, **k))
    validate = model.validate
    monkeypatch.setattr(model, "validate", lambda rows, *args: sizes.append(len(rows)) or validate(rows, *args))
    assert answer(model.validate_table, table) == whole
    assert whole[1]["invalid_rows"] == len(refused) and list(whole[1]["rows"]) == [str(i) for i in refused[:100]]
    assert sizes == [min(100, len(refused))]  # then the schema words the reported rows
    parts = {i // SUSPECT_PART for i in refused}
    in_parts = {rows_[i]["num"] for part in parts for i in range(part * SUSPECT_PART, min(10_000, (part + 1) *
                                                                                            SUSPECT_PART))}
    # each value of the parts once (but "n/a", which float() refuses, without a call), then the reported rows again
    assert len(values) == len(in_parts - {"n/a"}) + sizes[0]


GOOD = {"num": 1.5, "cnt": 3, "color": "red", "flag": True, "when": "2024-01-02T03:04", "note": "ab"}


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_each_boundary_value_gets_one_verdict_from_the_fast_path_marshmallow_and_the_json_schema(spec_name):
    """Every edge of the kinds' rules and of the test bounds, alone in a good row: the JSON Schema's verdict is
    marshmallow's (or, for a spelling it does not list, no acceptance marshmallow refuses), and the fast path, when
    it vouches for the row, converts it as marshmallow does."""
    spec, wrong = SPECS[spec_name], []
    for name, kind in KINDS.items():
        for value in BOUNDARIES[kind] + LENIENT_BOUNDARIES.get(kind, []):
            row = dict(GOOD, **{name: value})
            by_schema, by_server = verdicts(spec_name, [row])
            lenient = value in LENIENT_BOUNDARIES.get(kind, [])
            try:
                fast = spec.convert(table_from_records([row], spec.names))
            except SlowPath:
                fast = None
            slow = marshmallow_columns(spec_name, [row])
            if (by_schema and not by_server if lenient else by_schema != by_server) or (fast is not None and (
                    slow is None or any(as_values(fast[n]) != as_values(slow[n]) for n in spec.names))):
                wrong.append((name, value, by_schema, by_server, fast is not None))
    assert not wrong, wrong


def verdicts(spec_name: str, drawn: list[dict[str, Any]]) -> tuple[bool, bool]:
    """(the JSON Schema accepts every row, the server's row schema does)."""
    by_schema = all(JSON_SCHEMAS[spec_name].is_valid(row) for row in drawn)
    return by_schema, marshmallow_columns(spec_name, drawn) is not None


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_the_json_schema_gives_the_servers_verdict_on_typed_rows(spec_name):
    seen = {True: 0, False: 0}

    @CONFIGURED
    @given(rows())
    def check(drawn):
        assume(schema_can_judge(drawn))
        by_schema, by_server = verdicts(spec_name, drawn)
        assert by_schema == by_server, repr(drawn)
        seen[by_server] += 1

    check()
    assert min(seen.values()) > 50, seen  # both verdicts were reached often


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_what_the_json_schema_accepts_the_server_accepts_in_any_spelling(spec_name):
    @CONFIGURED
    @given(rows(lenient=True))
    def check(drawn):
        assume(schema_can_judge(drawn))
        by_schema, by_server = verdicts(spec_name, drawn)
        assert by_server or not by_schema, repr(drawn)

    check()


# pandas' edges, and the centuries whose leap day differs (1700, 1800, 1900, 2100, 2200 have none; 2000 has one)
DECADES = [1672, 1696, 1796, 1896, 1996, 2096, 2196, 2257]


@pytest.mark.parametrize("start", DECADES)
def test_the_date_time_pattern_is_exactly_pandas_range_of_calendar_days(start):
    """Every day of eleven years, at midnight and later: the pattern and the server agree."""
    spec = SPECS["kinds only"]
    pattern = Draft202012Validator({"pattern": spec.json_schema()["properties"]["when"]["pattern"]})
    field = spec.row_schema().fields["when"]
    day = np.datetime64(f"{start}-01-01")
    disagreements = []
    while day < np.datetime64(f"{start + 11}-01-01"):
        for time in ("", "T00:00", "T00:00:00.000", "T00:00:01", "T23:59:59.999999"):
            text = f"{day}{time}"
            try:
                accepted = field.deserialize(text) == text
            except ValidationError:
                accepted = False
            if pattern.is_valid(text) != accepted:
                disagreements.append(text)
        day += 1
    assert not disagreements, disagreements[:10]


NUMBER_TEXTS = st.one_of(st.text(), st.text(alphabet="0123456789+-._eE \\t\\n\\u00a0\\u0660\\u0661infatyINFATY", max_size=30),
                         st.from_regex(r"\A\s*[+-]?[0-9_]*\.?[0-9_]*([eE][+-]?[0-9]+)?\s*\Z"))


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(text=NUMBER_TEXTS, bounded=st.booleans())
@example(text="0\x1f", bounded=False)  # str.strip removes it, float() does not
def test_text_refused_without_marshmallow_is_text_the_number_fields_refuse(text, bounded):
    """Refused rows are counted by a float() check where it suffices: it must never refuse what a field accepts."""
    from marshmallow import validate

    from app.inference.features import _refused_by
    from app.schemas import FiniteFloat, WholeNumber

    for kind in (FiniteFloat, WholeNumber):
        judge = kind(allow_none=True, validate=[validate.Range(min=-5, max=5)] if bounded else [])
        try:
            judge.deserialize(text)
            accepted = True
        except ValidationError:
            accepted = False
        assert _refused_by(judge, text) is not accepted, (kind.__name__, text)
