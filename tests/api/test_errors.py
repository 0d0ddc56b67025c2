"""Every error class: its status code and the one JSON shape, never a stack trace."""
from __future__ import annotations

import json
import shutil

import pytest

from app.extensions import data_plane
from tests.support.apps import build_app, client_with_key
from tests.support.data import FEATURES, to_records

SHAPE = {"error", "details", "request_id"}


def check_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == SHAPE
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_malformed_json_is_400(client):
    check_error(client.post("/predict", data=b'{"data": [', content_type="application/json"), 400)


def test_non_utf8_body_is_400(client):
    check_error(client.post("/predict", data=b'{"data": ["\xff\xfe"]}', content_type="application/json"), 400)


def test_deeply_nested_json_is_400(client):
    body = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    check_error(client.post("/predict", data=body, content_type="application/json"), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client, good_row, content_type):
    kwargs = {"content_type": content_type} if content_type else {}
    body = check_error(client.post("/predict", data=json.dumps({"data": [good_row]}), **kwargs), 415)
    assert body["details"]["accepted"] == ["application/json", "text/csv"]


def test_schema_violations_are_422_per_row_and_field(client, good_row):
    rows = [dict(good_row) for _ in range(8)]
    rows[0]["num"] = "abc"
    rows[1]["surprise"] = 1
    del rows[2]["color"]
    rows[3]["cnt"] = 3.5
    rows[4]["when"] = "last tuesday"
    rows[5]["flag"] = "maybe"
    rows[6]["color"] = 7
    # rows[7] is valid and must not be reported
    body = check_error(client.post("/predict", json={"data": rows}), 422)
    errors = body["details"]["rows"]
    assert set(errors) == {"0", "1", "2", "3", "4", "5", "6"}
    assert errors["0"] == {"num": ["Not a valid number."]}
    assert errors["1"] == {"surprise": ["Unknown field."]}
    assert errors["2"] == {"color": ["Missing data for required field."]}
    assert errors["3"] == {"cnt": ["Not a valid integer."]}
    assert errors["4"] == {"when": ["Not a valid ISO 8601 date or date-time."]}
    assert errors["5"] == {"flag": ["Not a valid boolean."]}
    assert errors["6"] == {"color": ["Not a valid string."]}


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_422(client, good_row, literal):
    text = json.dumps({"data": [dict(good_row, num=0.12345)]}).replace("0.12345", literal.decode())
    body = check_error(client.post("/predict", data=text, content_type="application/json"), 422)
    assert "num" in body["details"]["rows"]["0"]


@pytest.mark.parametrize("payload, field", [
    ({}, "data"), ({"data": {"num": 1}}, "data"), ({"data": []}, "data"), ([1, 2], "data"),
    ({"data": [{}], "extra": 1}, "extra"),
])
def test_bad_envelope_is_422(client, payload, field):
    body = check_error(client.post("/predict", json=payload), 422)
    assert field in body["details"]


def test_rows_that_are_not_objects_are_422(client, good_row):
    body = check_error(client.post("/predict", json={"data": [good_row, 5, "x"]}), 422)
    assert set(body["details"]["rows"]) == {"1", "2"}


def test_too_many_rows_is_413(small_limits, good_row):
    body = check_error(small_limits.post("/predict", json={"data": [good_row] * 6}), 413)
    assert body["details"] == {"rows": 6, "max_rows": 5}
    assert small_limits.post("/predict", json={"data": [good_row] * 5}).status_code == 200


def test_body_over_the_size_limit_is_413(small_limits, good_row):
    padded = dict(good_row, note="x" * 5000)
    check_error(small_limits.post("/predict", json={"data": [padded]}), 413)


def test_a_body_of_exactly_the_limit_is_accepted(small_limits, good_row):
    body = json.dumps({"data": [good_row]}).encode()
    exact = body[:-1] + b" " * (4096 - len(body)) + b"}"
    assert len(exact) == 4096
    assert small_limits.post("/predict", data=exact, content_type="application/json").status_code == 200
    check_error(small_limits.post("/predict", data=exact + b" ", content_type="application/json"), 413)


def test_unknown_model_is_404(client, good_row):
    body = check_error(client.post("/models/nope/predict", json={"data": [good_row]}), 404)
    assert "nope" in body["error"]
    check_error(client.get("/models/nope"), 404)
    check_error(client.get("/no/such/route"), 404)


def test_unknown_method_is_405_json(client):
    response = client.put("/predict")
    check_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_model_not_ready_is_503(tmp_path, repository_path, good_row):
    broken = tmp_path / "repository"
    shutil.copytree(repository_path, broken)
    with open(broken / "binary" / "1" / "predictor" / "learner.pkl", "ab") as handle:
        handle.write(b"tampered")
    client = client_with_key(build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(broken), MODELS="binary"))

    body = check_error(client.post("/predict", json={"data": [good_row]}), 503)
    assert body["details"]["status"] == "failed"
    assert "integrity" in body["details"]["reason"] and "learner.pkl" in body["details"]["reason"]
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and "learner.pkl" in ready.get_json()["reason"]
    assert client.get("/health").status_code == 503
    assert client.get("/health/live").status_code == 200


def test_unexpected_failure_is_500_with_the_request_id_logged(app, client, good_row, monkeypatch, capsys):
    model = app.extensions["agserve.models"].get("binary")

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(model, "predict_validated", explode)
    monkeypatch.setattr(data_plane(app), "cache", None)  # the row must reach the exploding model
    response = client.post("/predict", json={"data": [good_row]}, headers={"X-Request-ID": "boom-42"})

    body = check_error(response, 500)
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert body["request_id"] == "boom-42"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "boom-42" and "secret internal detail" in errors[0]["traceback"]


@pytest.mark.parametrize("hostile", ["bad id <script>", "x" * 129, "a\tb"])
def test_hostile_request_ids_are_replaced(client, hostile):
    response = client.get("/health/live", headers={"X-Request-ID": hostile})
    assert response.headers["X-Request-ID"] != hostile and len(response.headers["X-Request-ID"]) == 32


def test_unknown_fields_and_missing_features_can_be_allowed(repository_path, in_process, dataset, tmp_path):
    _, test = dataset
    frame = test[FEATURES].head(2)
    rows = to_records(frame)
    rows[0]["unused"] = "ignored"
    del rows[1]["color"]
    lenient = client_with_key(build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path),
                                        MODELS="binary", UNKNOWN_FIELDS="exclude", MISSING_FEATURES="null"))
    response = lenient.post("/predict", json={"data": rows})
    expected = frame.copy()
    expected.loc[expected.index[1], "color"] = None
    assert response.status_code == 200
    assert response.get_json()["predictions"] == in_process["binary"].predict(expected).tolist()


def test_owner_bounds_from_schema_json_are_enforced(tmp_path, repository_path, good_row):
    bounded = tmp_path / "repository"
    shutil.copytree(repository_path, bounded)
    (bounded / "binary" / "1" / "schema.json").write_text(json.dumps(
        {"features": {"num": {"minimum": -5, "maximum": 5}, "color": {"enum": ["red", "green", "blue", "black"]},
                      "note": {"max_length": 100}}}))
    client = client_with_key(build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(bounded), MODELS="binary"))
    rows = [dict(good_row, num=6), dict(good_row, color="purple"), dict(good_row, note="x" * 101), good_row]
    body = check_error(client.post("/predict", json={"data": rows}), 422)
    assert set(body["details"]["rows"]) == {"0", "1", "2"}
    assert "num" in body["details"]["rows"]["0"] and "color" in body["details"]["rows"]["1"]
    schema = client.get("/models/binary/schema").get_json()["row"]["properties"]
    assert schema["num"]["minimum"] == -5 and schema["num"]["maximum"] == 5
    assert schema["note"]["maxLength"] == 100


def test_bounds_naming_an_unknown_feature_keep_the_model_out(tmp_path, repository_path):
    bounded = tmp_path / "repository"
    shutil.copytree(repository_path, bounded)
    (bounded / "binary" / "1" / "schema.json").write_text(json.dumps({"features": {"ghost": {"minimum": 0}}}))
    client = client_with_key(build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(bounded), MODELS="binary"))
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and "ghost" in ready.get_json()["reason"]
