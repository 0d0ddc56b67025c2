"""Property-based: the CSV reader (pyarrow, with pandas deciding whatever pyarrow would read otherwise) accepts and
refuses the bodies pandas alone did, and gives the same table. Bodies carry CSV's hazards: quoted line breaks, commas
and quotes, quotes inside unquoted cells, quoted cells left open, ragged rows, blank and whitespace-only lines, CR,
CRLF and LF line ends (mixed too), a BOM, invalid UTF-8, empty cells (quoted or not) and more rows than the limit.
The second property holds the whole decoding of the binary model's CSV rows to the reading it replaced (pandas,
numeric features as float64 in bodies under 1 MiB): the same validated columns, or the same refusal."""
from __future__ import annotations

import io
import json
import re
import warnings
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.codecs import csv_rows, json_rows
from app.config import load_settings
from app.errors import ApiError
from app.inference import ModelRegistry, ModelRepository
from app.inference.errors import ServingError
from app.inference.tables import Table
from tests.support.data import FEATURES

HAZARDS = ["a", "1", " ", "\t", ",", '"', '""', "\n", "\r", "\r\n", "\ufeff", "é", "\\", "#",
           csv_rows.SENTINEL.decode()]
CELL = st.lists(st.sampled_from(HAZARDS), max_size=5).map("".join)
QUOTED = CELL.map(lambda text: '"' + text.replace('"', '""') + '"')
FUZZ = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@st.composite
def csv_bodies(draw, names: list[str], cell=st.one_of(CELL, QUOTED)) -> bytes:
    """A header of names and a few rows of hazardous cells, some rows ragged, with one kind of line end or mixed."""
    end = draw(st.sampled_from(["\n", "\r\n", "\r", None]))
    width = len(names)
    rows = draw(st.lists(st.lists(cell, min_size=max(0, width - 1), max_size=width + 1).map(",".join), max_size=6))
    lines = [",".join(names), *rows]
    ends = [end or draw(st.sampled_from(["\n", "\r\n", "\r"])) for _ in lines]
    text = draw(st.sampled_from(["", "\ufeff"])) + "".join(line + e for line, e in zip(lines, ends))
    body = text.encode()[:len(text.encode()) - draw(st.integers(0, 2))]  # the last line end (or more) cut
    if draw(st.integers(0, 4)) == 0:  # a byte no UTF-8 text holds, or half of one
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
    return body


def first_line_is_text(body: bytes) -> bool:
    """Whether the header line decodes (the reader's precondition: csv_rows._csv_header refuses it otherwise)."""
    try:
        re.split(rb"[\r\n]", body, maxsplit=1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def pandas_only(body: bytes, wanted: list[str], max_rows: int):
    try:
        return csv_rows._pandas_table(body, wanted, max_rows)
    except ApiError as exc:
        return exc.status, exc.message, exc.details


@given(st.lists(st.sampled_from(["a", "b", "c", "é"]), min_size=1, max_size=3, unique=True).flatmap(
    lambda names: st.tuples(st.just(names), csv_bodies(names), st.integers(1, 5))))
@FUZZ
def test_pyarrow_reads_what_pandas_reads_or_leaves_the_body_to_pandas(case):
    names, body, max_rows = case
    assume(first_line_is_text(body))
    wanted = [name for name in names if name != "b"]  # an unwanted column, at times
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' warnings on odd bodies
        expected = pandas_only(body, wanted, max_rows)
        table = csv_rows._arrow_table(body, names, wanted, {"a"} & set(wanted), max_rows)
    if table is not None:
        assert not isinstance(expected, tuple), (body, expected, table)  # pandas refused what pyarrow read
        assert (table.columns, table.n) == (expected.columns, expected.n), body


def test_plain_bodies_are_read_by_pyarrow():
    """The fast reader is the one a well-formed body meets (quoted commas, quotes and line breaks, CRLF, a BOM)."""
    body = '\ufeffa,b,c\r\n1,"x, ""y""\r\nz",\r\n,"",é\r\n'.encode()
    table = csv_rows._arrow_table(body, ["a", "b", "c"], ["a", "c"], {"a"}, 10)
    assert table is not None and (table.columns, table.n) == ({"a": ["1", None], "c": [None, "é"]}, 2)
    assert (table.columns, table.n) == (pandas_only(body, ["a", "c"], 10).columns, 2)
    numbers, missing = table.columns["a"].floats  # a numeric feature's cells parsed by pyarrow too; text is not
    assert numbers[0] == 1.0 and np.isnan(numbers[1]) and missing.tolist() == [False, True]
    assert table.columns["c"].floats is None


@pytest.fixture(scope="module")
def model(repository_path):
    registry = ModelRegistry(ModelRepository(repository_path), names=("binary",), default="binary")
    registry.refresh(load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": False}))
    return registry.get("binary")


def pandas_reading(body: bytes, model, max_rows: int):
    """The reading this reader replaced for bodies under 1 MiB: pandas, numeric features parsed as float64, or all
    as text when a numeric cell failed; less its bug (True and False read as numbers). A parsed number reaches the
    validator as a float (NaN, an empty cell, as None), as the old float64 column did."""
    numeric = {f["name"]: "float64" for f in model.features if f["kind"] == "numeric"}
    names = csv_rows._csv_header(body, model)
    options = dict(keep_default_na=False, na_values=[""], encoding="utf-8", encoding_errors="strict",
                   float_precision="round_trip", nrows=max_rows + 1,
                   usecols=[name for name in names if name in model.feature_names])
    text = csv_rows._pandas_table(body, options["usecols"], max_rows)
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=defaultdict(lambda: str, numeric), **options)
    except ValueError:
        return text
    if any(str(value).lower() in ("true", "false") for name in numeric for value in text.columns.get(name, [])):
        return text  # pandas' float parser read these as 1 and 0, which marshmallow refuses: the bug fixed here
    columns = {}
    for name in frame.columns:
        column = frame[name]
        columns[str(name)] = [None if value is None or value != value else value for value in column.tolist()]
    return Table(columns, len(frame))


def outcome(read, body: bytes, model, max_rows: int):
    """The validated columns as plain lists, or the refusal's status, message and details."""
    try:
        csv_rows._check_cell_bytes(body, model.max_cell_bytes)
        if b"\x00" in body:
            return "NUL"
        table = read(body, model, max_rows)
        csv_rows.check_rows(table.n, max_rows, counted=False)
        columns = model.validate_table(csv_rows.require_rows(table))
    except ServingError as exc:
        return exc.status, exc.message, exc.details
    return {name: [None if isinstance(v, float) and np.isnan(v) else v
                   for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
            for name, values in columns.items()}


VALUES = st.sampled_from(["1.5", "-0.0", "1e5", " 2 ", "nan", "inf", "1e999", "0x10", "1_0", "3", "9" * 20, "x",
                          "True", "no", "2024-01-02", "2024-01-02T03:04:05", "red", "", '"a,b"', '"1\n2"', '""'])


@given(csv_bodies(FEATURES, cell=st.one_of(VALUES, VALUES, CELL)), st.integers(1, 5))
@settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_decoding_answers_as_the_pandas_reading_did(model, case, max_rows):
    body = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert outcome(csv_rows._read_table, body, model, max_rows) == outcome(pandas_reading, body, model,
                                                                                max_rows), body


@pytest.mark.parametrize("cell", ["True", "false"])
def test_a_boolean_in_a_numeric_column_is_refused_as_in_json(model, cell):
    """pandas' float parser read True and False as 1 and 0 in bodies under 1 MiB; marshmallow refuses them."""
    row = {"num": cell, "cnt": "3", "color": "red", "flag": "True", "when": "2024-01-02", "note": "hi"}
    body = (",".join(row) + "\n" + ",".join(row.values()) + "\n").encode()
    with pytest.raises(ServingError) as refusal:
        model.validate_table(csv_rows.decode(body, model, 10))
    assert refusal.value.details["rows"] == {"0": {"num": ["Not a valid number."]}}
    with pytest.raises(ServingError) as as_json:
        model.validate_table(json_rows.decode(json.dumps({"data": [row]}).encode(), model, 10))
    assert as_json.value.details["rows"] == refusal.value.details["rows"]
