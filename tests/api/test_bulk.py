"""CSV and split-orientation inputs give the same predictions as records; CSV answers parse back to the same."""
from __future__ import annotations

import csv
import io

import pytest

from tests.support.answers import expected_answers
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES, to_records


def as_csv(frame) -> bytes:
    records = to_records(frame)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(frame.columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in records)
    return buffer.getvalue().encode()


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_csv_and_split_equal_records_and_autogluon(client, in_process, dataset, name):
    frame = dataset[1][FEATURES]
    records = client.post(f"/models/{name}/predict", json={"data": to_records(frame)}).get_json()
    split = client.post(f"/models/{name}/predict", json={"data": {
        "columns": FEATURES, "data": [[row[f] for f in FEATURES] for row in to_records(frame)]}}).get_json()
    from_csv = client.post(f"/models/{name}/predict", data=as_csv(frame), content_type="text/csv").get_json()

    expected = expected_answers(in_process[name], frame)
    for body in (records, split, from_csv):
        assert (body["predictions"], body["probabilities"]) == expected


def test_csv_answers_parse_back_to_the_same_values(client, dataset):
    frame = dataset[1][FEATURES]
    for name in PROBLEMS:
        as_json = client.post(f"/models/{name}/predict", json={"data": to_records(frame)}).get_json()
        response = client.post(f"/models/{name}/predict", json={"data": to_records(frame)},
                               headers={"Accept": "text/csv"})
        assert response.mimetype == "text/csv" and response.headers["X-Model-Version"] == "1"
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert len(rows) == len(frame)
        if as_json["probabilities"] is not None:
            assert [r["prediction"] for r in rows] == [str(p) for p in as_json["predictions"]]
            assert [{k[len("proba_"):]: float(v) for k, v in r.items() if k.startswith("proba_")} for r in rows] \
                == as_json["probabilities"]
        elif isinstance(as_json["predictions"][0], dict):
            assert [{k[len("quantile_"):]: float(v) for k, v in r.items()} for r in rows] == as_json["predictions"]
        else:
            assert [float(r["prediction"]) for r in rows] == as_json["predictions"]


def test_csv_in_and_csv_out(client, in_process, dataset):
    frame = dataset[1][FEATURES].head(10)
    response = client.post("/models/binary/predict", data=as_csv(frame), content_type="text/csv; charset=utf-8",
                           headers={"Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["prediction"] for r in rows] == in_process["binary"].predict(frame).tolist()


@pytest.mark.parametrize("body, status, field", [
    (b"", 422, "data"),
    (b"num,cnt,color,flag,when,note\n", 422, "data"),
    (b"num,cnt,color,flag,when,note,extra\n1,2,red,true,2024-01-01,x,9\n", 422, "columns"),
    (b"num,cnt\n1,2\n", 422, "columns"),
    (b"num,cnt,color,flag,when,note\nabc,2,red,true,2024-01-01,x\n", 422, "rows"),
    (b'num,cnt,color,flag,when,note\n1,2,"red\n', 400, "reason"),
    (b"num,cnt,color,flag,when,note\n1,2,\xff\xfe,true,2024-01-01,x\n", 400, "reason"),
])
def test_bad_csv_bodies(client, body, status, field):
    response = client.post("/models/binary/predict", data=body, content_type="text/csv")
    assert response.status_code == status, response.get_json()
    assert field in response.get_json()["details"]


@pytest.mark.parametrize("data, field", [
    ({"columns": FEATURES, "data": [[1, 2]]}, "rows"),
    ({"columns": FEATURES + ["extra"], "data": [[1.0, 2, "red", True, None, "x", 1]]}, "columns"),
    ({"columns": ["num", "num"], "data": [[1, 2]]}, "columns"),
    ({"columns": FEATURES}, "data"),
    ({"columns": FEATURES, "data": []}, "data"),
])
def test_bad_split_bodies_are_422(client, data, field):
    response = client.post("/models/binary/predict", json={"data": data})
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["details"]


def test_row_limit_applies_to_csv_and_split(small_limits, good_row):
    header = ",".join(FEATURES).encode()
    line = ",".join("" if good_row[f] is None else str(good_row[f]) for f in FEATURES).encode()
    csv_body = header + b"\n" + b"\n".join([line] * 6) + b"\n"
    assert small_limits.post("/predict", data=csv_body, content_type="text/csv").status_code == 413
    split = {"columns": FEATURES, "data": [[good_row[f] for f in FEATURES]] * 6}
    assert small_limits.post("/predict", json={"data": split}).status_code == 413
