"""The codecs without HTTP: records, split and CSV bodies of the same rows decode to the same validated columns, and
the envelope's limits refuse the same way for every format (V2 with the protocol's 400)."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from app.api.v2 import decode_inputs
from app.codecs import csv_rows, json_rows
from app.config import load_settings
from app.errors import ApiError
from app.inference import ModelRegistry, ModelRepository
from app.inference.errors import InvalidInput
from tests.support.data import FEATURES, to_records


@pytest.fixture(scope="module")
def model(repository_path):
    registry = ModelRegistry(ModelRepository(repository_path), names=("binary",), default="binary")
    registry.refresh(load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": False}))
    return registry.get("binary")


@pytest.fixture()
def frame(dataset):
    """Seven rows as a client would write them (ISO date-times), for JSON and CSV alike."""
    return pd.DataFrame(to_records(dataset[1][FEATURES].iloc[:7]), columns=FEATURES)


def plain(columns):
    """Validated columns as comparable lists (NaN and None both missing)."""
    return {name: [None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                   for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
            for name, values in columns.items()}


def test_records_split_and_csv_decode_to_the_same_columns(model, frame):
    rows = to_records(frame)
    records = json_rows.decode(json.dumps({"data": rows}).encode(), model, 100)
    split = json_rows.decode(json.dumps({"data": {"columns": FEATURES, "data": [list(r.values()) for r in rows]}})
                             .encode(), model, 100)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    csv = csv_rows.decode(buffer.getvalue().encode(), model, 100)
    expected = plain(model.validate_table(records))
    assert plain(model.validate_table(split)) == expected == plain(model.validate_table(csv))


def test_every_format_refuses_one_row_past_the_limit(model, frame):
    rows = to_records(frame)  # 7 rows against a limit of 6
    with pytest.raises(ApiError) as records:
        json_rows.decode(json.dumps({"data": rows}).encode(), model, 6)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    with pytest.raises(ApiError) as csv:
        csv_rows.decode(buffer.getvalue().encode(), model, 6)
    inputs = [{"name": f, "shape": [7], "datatype": "BYTES" if f in ("color", "when", "note") else
               ("BOOL" if f == "flag" else "FP64"), "data": [r[f] for r in rows]} for f in FEATURES]
    with pytest.raises(ApiError) as v2:
        decode_inputs(model, inputs, 6)
    assert (records.value.status, csv.value.status, v2.value.status) == (413, 413, 400)
    assert records.value.details == {"rows": 7, "max_rows": 6} == v2.value.details
    assert csv.value.details == {"max_rows": 6}  # CSV parsing stops one row past the limit: the count is unknown


def test_the_envelope_refuses_unknown_keys_and_a_missing_data_field(model):
    for body, field in (({"data": [], "extra": 1}, "extra"), ({"rows": []}, "data")):
        with pytest.raises(ApiError) as refused:
            json_rows.decode(json.dumps(body).encode(), model, 10)
        assert refused.value.status == 422 and field in refused.value.details


def _outcome(model, body: bytes, max_rows: int):
    try:
        return "rows", plain(model.validate_table(json_rows.decode(body, model, max_rows)))
    except ApiError as exc:
        return exc.status, exc.message
    except InvalidInput as exc:
        return 422, str(exc)


def test_large_bodies_are_counted_before_they_are_built_and_decide_as_the_whole_parse(model, frame, monkeypatch):
    """A body past 1 MiB is first counted on simdjson's tape; every outcome equals that of the whole parse alone
    (the column refusal says "more than", as it has not counted them all)."""
    rows = to_records(frame)
    many = json.dumps({"data": rows * 3000}).encode()  # 21,000 rows
    few = json.dumps({"data": rows * 1400}).encode()  # 9,800 rows
    split = json.dumps({"data": {"columns": FEATURES, "data": [list(r.values()) for r in rows] * 3000}}).encode()
    wide = json.dumps({"data": [dict(rows[0], **{f"c{i}": 1 for i in range(200_000)})]}).encode()
    repeated = ('{"data": [{' + '"num": 1.5, ' * 200_000 + json.dumps(rows[0])[1:] + "]}").encode()
    first_long_last_short = many[:-1] + b', "data": ' + json.dumps(rows).encode() + b"}"
    first_short_last_long = json.dumps({"data": rows}).encode()[:-1] + b', "data": ' + many[9:]
    not_a_float = few[:-2] + b', {"num": NaN}]}'
    bodies = [many, few, split, wide, repeated, first_long_last_short, first_short_last_long, not_a_float]
    assert all(len(body) >= json_rows.COUNT_FIRST for body in bodies)
    counted_first = [_outcome(model, body, 10_000) for body in bodies]
    monkeypatch.setattr(json_rows, "COUNT_FIRST", float("inf"))
    whole = [_outcome(model, body, 10_000) for body in bodies]
    assert counted_first[3] == (413, f"too many columns: more than {model.max_columns}")
    assert whole[3] == (413, f"too many columns: {200_000 + len(FEATURES)} (at most {model.max_columns})")
    del counted_first[3], whole[3]
    assert counted_first == whole
    assert [o[0] for o in whole] == [413, "rows", 413, "rows", "rows", 413, 422]


def test_counting_first_spares_the_whole_parse(model, frame, monkeypatch):
    """What the count costs, against building the objects: a 32 MiB body of 245,000 small rows."""
    import time
    body = json.dumps({"data": to_records(frame) * 35_000}).encode()
    assert 30 << 20 < len(body) <= 32 << 20

    def cpu(limit):
        monkeypatch.setattr(json_rows, "COUNT_FIRST", limit)
        started = time.process_time()
        with pytest.raises(ApiError) as refused:
            json_rows.decode(body, model, 10_000)
        assert refused.value.status == 413
        return time.process_time() - started

    assert min(cpu(1 << 20) for _ in range(3)) < 0.1 < min(cpu(float("inf")) for _ in range(2))
