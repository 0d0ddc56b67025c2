"""POST /feedback joins outcomes to answered predictions; the live metric equals AutoGluon's own on the same rows."""
from __future__ import annotations

import math

import pytest

from tests.support.apps import PROBLEMS, build_app, client_with_key
from tests.support.data import FEATURES, mixed_frame, to_records


@pytest.fixture(scope="module")
def monitored(repository_path, tmp_path_factory):
    """An app with its own monitoring store, so no other test's traffic or feedback is in the windows."""
    app = build_app(tmp_path_factory.mktemp("feedback") / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path),
                    DEFAULT_MODEL="binary")
    return app, client_with_key(app)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_feedback_for_100_predictions_gives_the_offline_metric(monitored, in_process, name):
    app, client = monitored
    rows = mixed_frame(n=100, seed=41)
    label = PROBLEMS[name][0]
    ids = []
    for start in range(0, 100, 25):  # four requests of 25 rows: feedback names rows inside requests
        answer = client.post(f"/models/{name}/predict", json={"data": to_records(rows.iloc[start:start + 25][FEATURES])})
        assert answer.status_code == 200, answer.json
        ids += [f"{answer.json['request_id']}:{i}" for i in range(25)]
    actuals = rows[label].tolist()
    # Half one at a time, half in one batch: both forms are part of the contract.
    for prediction_id, actual in zip(ids[:50], actuals[:50]):
        answer = client.post("/feedback", json={"prediction_id": prediction_id, "actual": actual})
        assert answer.status_code == 200, answer.json
    answer = client.post("/feedback", json={"feedback": [{"prediction_id": p, "actual": a}
                                                         for p, a in zip(ids[50:], actuals[50:])]})
    assert answer.status_code == 200 and answer.json["accepted"] == 50, answer.json

    report = client.get(f"/admin/models/{name}/quality").json
    offline = in_process[name].evaluate(rows[FEATURES + [label]], silent=True)
    assert report["outcomes"] == 100
    assert report["eval_metric"] == in_process[name].eval_metric.name
    assert set(report["live"]) == set(k for k, v in offline.items() if isinstance(v, (int, float)))
    for metric, value in report["live"].items():
        assert math.isclose(value, offline[metric], rel_tol=1e-9, abs_tol=1e-12), (metric, value, offline[metric])
    assert report["live_eval_metric"] == report["live"][report["eval_metric"]]
    assert report["validation_eval_metric"] is not None  # imported with labelled reference data


def test_request_id_with_one_value_per_row(monitored, in_process):
    app, client = monitored
    rows = mixed_frame(n=3, seed=42)
    answer = client.post("/models/regression/predict", json={"data": to_records(rows[FEATURES])})
    request_id = answer.json["request_id"]
    wrong = client.post("/feedback", json={"request_id": request_id, "actual": 1.0})
    assert wrong.status_code == 422 and "3 rows" in wrong.json["details"]["items"]["0"]["actual"][0]
    right = client.post("/feedback", json={"request_id": request_id, "actual": rows["y_regression"].tolist()})
    assert right.status_code == 200
    assert right.json["prediction_ids"] == [f"{request_id}:{i}" for i in range(3)]


def test_bad_feedback_is_refused_and_nothing_is_stored(monitored):
    app, client = monitored
    rows = mixed_frame(n=2, seed=43)
    answer = client.post("/models/multiclass/predict", json={"data": to_records(rows[FEATURES])})
    request_id = answer.json["request_id"]
    before = client.get("/admin/models/multiclass/quality").json["outcomes"]

    cases = [
        ({"prediction_id": "no-such-request:0", "actual": "low"}, 404),
        ({"feedback": [{"prediction_id": f"{request_id}:0", "actual": "low"},
                       {"prediction_id": "no-such-request:0", "actual": "low"}]}, 404),
        ({"feedback": [{"prediction_id": f"{request_id}:0", "actual": "low"},
                       {"prediction_id": f"{request_id}:1", "actual": "purple"}]}, 422),  # not a class
        ({"prediction_id": f"{request_id}:2", "actual": "low"}, 422),  # the request had rows 0 and 1
        ({"prediction_id": f"{request_id}:0"}, 422),
        ({"prediction_id": f"{request_id}:0", "request_id": request_id, "actual": "low"}, 422),
        ({"prediction_id": "not an id", "actual": "low"}, 422),
        ({"feedback": []}, 422),
    ]
    for body, status in cases:
        refused = client.post("/feedback", json=body)
        assert refused.status_code == status, (body, refused.json)
        assert set(refused.json) == {"error", "details", "request_id"}
    assert client.get("/admin/models/multiclass/quality").json["outcomes"] == before

    numbers = client.post("/models/regression/predict", json={"data": to_records(rows[FEATURES].iloc[:1])})
    for actual in ["high", True, None, [1.0, 2.0]]:
        refused = client.post("/feedback", json={"request_id": numbers.json["request_id"], "actual": actual})
        assert refused.status_code == 422, (actual, refused.json)


def test_a_repeated_outcome_replaces_the_earlier_one(monitored):
    app, client = monitored
    rows = mixed_frame(n=1, seed=44)
    request_id = client.post("/models/binary/predict", json={"data": to_records(rows[FEATURES])}).json["request_id"]
    before = client.get("/admin/models/binary/quality").json["outcomes"]
    for actual in ("yes", "no"):  # a client retrying, or correcting itself
        assert client.post("/feedback", json={"request_id": request_id, "actual": actual}).status_code == 200
    assert client.get("/admin/models/binary/quality").json["outcomes"] == before + 1


def test_outcomes_of_one_class_still_give_the_eval_metric(monitored):
    """ROC AUC is undefined while every outcome is the same class; the eval metric (accuracy) is still reported."""
    from app.monitoring.quality import quality_report

    app, _ = monitored
    model = app.extensions["agserve.models"].get("binary")
    outputs = {"predictions": ["yes", "no"], "probabilities": [{"no": 0.2, "yes": 0.8}, {"no": 0.7, "yes": 0.3}]}
    report = quality_report(model, [("yes", outputs, 0), ("yes", outputs, 1)], 60)
    assert report["error"] is None and report["eval_metric"] == "accuracy"
    assert report["live"] == {"accuracy": 0.5}
