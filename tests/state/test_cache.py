"""The prediction cache, embedded and on a real Redis: hits skip the model and give the model's own answers; a
promote, a rollback or DELETE /admin/cache sends the same rows to the model again."""
from __future__ import annotations

import shutil

import pytest

from app import metrics
from tests.support.apps import build_app, client_with_key
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.redisserver import redis_server


def counter(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


@pytest.fixture(params=["embedded", "redis"])
def cached_app(request, repository_path, tmp_path):
    """An app over its own copy of the repository (promote and rollback change it), with each cache backend."""
    repository = tmp_path / "repository"
    shutil.copytree(repository_path, repository)
    settings = {"MODEL_REPOSITORY": str(repository), "DEFAULT_MODEL": "binary", "RELOAD_INTERVAL": 0}
    if request.param == "redis":
        with redis_server() as redis:
            yield build_app(tmp_path / "auth.sqlite3", REDIS_URL=redis.url, **settings), redis
    else:
        yield build_app(tmp_path / "auth.sqlite3", **settings), None


def predict(client, rows):
    answer = client.post("/models/binary/predict", json={"data": to_records(rows[FEATURES])})
    assert answer.status_code == 200, answer.json
    return answer.json


def test_cached_rows_skip_the_model_and_equal_its_answers(cached_app, in_process):
    app, redis = cached_app
    client = client_with_key(app)
    rows = mixed_frame(n=3, seed=71)
    hits, model_rows = counter(metrics.CACHE_ROWS, "binary", "hit"), counter(metrics.ROWS_PREDICTED, "binary", "1")

    first = predict(client, rows.iloc[:2])
    assert counter(metrics.ROWS_PREDICTED, "binary", "1") == model_rows + 2
    again = predict(client, rows)  # two rows cached, one new: only the new one reaches the model
    assert counter(metrics.CACHE_ROWS, "binary", "hit") == hits + 2
    assert counter(metrics.ROWS_PREDICTED, "binary", "1") == model_rows + 3
    assert again["predictions"][:2] == first["predictions"] and again["probabilities"][:2] == first["probabilities"]

    expected = in_process["binary"].predict_proba(rows[FEATURES], as_multiclass=True)
    assert again["probabilities"] == [{str(k): v for k, v in row.items()} for row in expected.to_dict("records")]
    assert again["predictions"] == in_process["binary"].predict(rows[FEATURES]).tolist()
    if redis is not None:  # shared: the rows are in Redis, not only in this process
        assert len(redis.client().keys("agserve:cache:*")) == 3


def test_promote_rollback_and_clear_send_rows_to_the_model_again(cached_app):
    app, _ = cached_app
    client = client_with_key(app)
    registry = app.extensions["agserve.models"]
    rows = mixed_frame(n=2, seed=72)

    def model_calls_for_one_request():
        before = sum(counter(metrics.ROWS_PREDICTED, "binary", v) for v in ("1", "2"))
        predict(client, rows)
        return sum(counter(metrics.ROWS_PREDICTED, "binary", v) for v in ("1", "2")) - before

    assert model_calls_for_one_request() == 2
    assert model_calls_for_one_request() == 0  # cached
    version = registry.repository.import_predictor(registry.repository.get("binary").predictor_path, "binary").version
    assert client.post("/admin/models/binary/promote", json={"version": version, "force": True}).status_code == 200
    registry.refresh(app.config)
    assert model_calls_for_one_request() == 2
    assert model_calls_for_one_request() == 0
    assert client.post("/admin/models/binary/rollback").status_code == 200
    registry.refresh(app.config)
    assert model_calls_for_one_request() == 2  # back on version 1, yet not from its old entries
    cleared = client.delete("/admin/cache")
    assert cleared.status_code == 200 and cleared.json["cleared_rows"] >= 2
    assert model_calls_for_one_request() == 2


def test_large_requests_skip_the_cache(cached_app):
    app, _ = cached_app
    client = client_with_key(app)
    rows = mixed_frame(n=101, seed=73)  # over CACHE_MAX_REQUEST_ROWS (100)
    misses = counter(metrics.CACHE_ROWS, "binary", "miss")
    predict(client, rows)
    assert counter(metrics.CACHE_ROWS, "binary", "miss") == misses
