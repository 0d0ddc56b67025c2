"""The data plane without HTTP: each step of DataPlane.infer, in order, on real tiny models, answers compared with
AutoGluon's own in-process answers on the same rows."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from app.config import load_settings
from app.inference import InvalidInput, ModelNotFound, ModelRegistry, ModelRepository
from app.inference.dataplane import DataPlane, NotRecorded, RequestContext
from app.inference.tables import table_from_records
from app.predictionlog import PredictionLog
from app.state.cache import LocalCache
from tests.support.data import FEATURES, to_records


class RecordingMonitor:
    """Stands in for app.monitoring's Monitor at the one seam the data plane uses: collector.observe_prediction
    and collector.failing (the monitor itself is tested in tests/monitoring)."""

    def __init__(self, failing: bool = False):
        self.seen = []
        self.collector = SimpleNamespace(failing=failing, observe_prediction=self._observe)

    def _observe(self, request_id, model, result):
        self.seen.append((request_id, model.name, model.version, len(result.predictions), sorted(result.inputs)))


def registry_for(repository_path, **overrides) -> tuple[ModelRegistry, dict]:
    settings = load_settings(environ={}, overrides={"ENV": "testing", **overrides})
    registry = ModelRegistry(ModelRepository(repository_path), names=("binary", "regression"), default="binary")
    registry.refresh(settings)
    assert registry.ready, registry.not_ready_reason()
    return registry, settings


@pytest.fixture(scope="module")
def registry(repository_path):
    found, _ = registry_for(repository_path, BATCHING=False)
    yield found
    for slot in found.slots.values():
        slot.model.close()


@pytest.fixture()
def rows(dataset):
    _, test = dataset
    return to_records(test[FEATURES].iloc[:6])


def counting(model, monkeypatch) -> list[int]:
    """Record the row count of every model call (the model is still called)."""
    calls, original = [], model._predict_parts

    def predict_parts(parts, counts):
        calls.append(sum(counts))
        return original(parts, counts)

    monkeypatch.setattr(model, "_predict_parts", predict_parts)
    return calls


def test_infer_resolves_validates_predicts_logs_and_monitors_in_order(registry, rows, dataset, in_process, tmp_path):
    monitor = RecordingMonitor()
    plane = DataPlane(registry, prediction_log=PredictionLog(tmp_path / "log"), monitor=monitor)
    context = RequestContext("req-1")
    result = plane.infer(None, table_from_records(rows, FEATURES), context)  # None: the default model

    _, test = dataset
    expected = in_process["binary"].predict_proba(test[FEATURES].iloc[:6])
    assert result.predictions == in_process["binary"].predict(test[FEATURES].iloc[:6]).tolist()
    assert np.allclose([[p[c] for c in result.columns] for p in result.probabilities], expected.to_numpy(), atol=1e-12)
    assert (context.model, context.version, context.rows, context.served) == ("binary", "1", 6, registry.get("binary"))
    assert set(context.timings) == {"validate", "predict"}
    [line] = (tmp_path / "log").glob("*.jsonl")
    record = json.loads(line.read_text())
    assert (record["request_id"], record["model"], record["rows"], record["predictions"]) == \
        ("req-1", "binary", 6, result.predictions)
    assert monitor.seen == [("req-1", "binary", "1", 6, sorted(FEATURES))]


def test_invalid_rows_stop_before_the_model_the_log_and_monitoring(registry, rows, tmp_path, monkeypatch):
    monitor = RecordingMonitor()
    plane = DataPlane(registry, prediction_log=PredictionLog(tmp_path / "log"), monitor=monitor)
    calls = counting(registry.get("binary"), monkeypatch)
    bad = [dict(rows[0], **{FEATURES[0]: "not a value of any kind" * 3}), rows[1]]
    with pytest.raises(InvalidInput) as refused:
        plane.infer("binary", table_from_records(bad, FEATURES), RequestContext("bad"))
    assert refused.value.status == 422 and refused.value.details["invalid_rows"] == 1
    assert calls == [] and monitor.seen == [] and not (tmp_path / "log").exists()


def test_the_cache_answers_seen_rows_and_only_new_rows_reach_the_model(registry, rows, tmp_path, monkeypatch):
    plane = DataPlane(registry, cache=LocalCache(1000, 60, tmp_path / "generation"))
    calls = counting(registry.get("binary"), monkeypatch)
    first = plane.infer("binary", table_from_records(rows[:4], FEATURES), RequestContext("a"))
    mixed = plane.infer("binary", table_from_records(rows[2:6], FEATURES), RequestContext("b"))  # 2 seen, 2 new
    again = plane.infer("binary", table_from_records(rows[:4], FEATURES), RequestContext("c"))
    uncached = DataPlane(registry).infer("binary", table_from_records(rows, FEATURES), RequestContext("d"))
    assert calls == [4, 2, 6]  # the third request never reached the model
    assert again.predictions == first.predictions and again.probabilities == first.probabilities
    assert mixed.predictions == uncached.predictions[2:6] and mixed.probabilities == uncached.probabilities[2:6]


def test_requests_larger_than_the_cache_limit_skip_it(registry, rows, tmp_path, monkeypatch):
    model = registry.get("binary")
    monkeypatch.setattr(model, "cache_max_rows", 3)
    cache = LocalCache(1000, 60, tmp_path / "generation")
    plane = DataPlane(registry, cache=cache)
    calls = counting(model, monkeypatch)
    for request_id in ("a", "b"):
        plane.infer("binary", table_from_records(rows[:4], FEATURES), RequestContext(request_id))
    assert calls == [4, 4]


def test_refuse_policy_refuses_when_a_record_cannot_be_kept(registry, rows, tmp_path, monkeypatch):
    calls = counting(registry.get("binary"), monkeypatch)
    failing = DataPlane(registry, monitor=RecordingMonitor(failing=True), refuse_unrecorded=True)
    with pytest.raises(NotRecorded) as refused:
        failing.infer("binary", table_from_records(rows, FEATURES), RequestContext("x"))
    assert refused.value.status == 503 and refused.value.details == {"store": "monitoring"} and calls == []

    (tmp_path / "not-a-directory").write_text("")  # the log cannot open a file under it
    unloggable = DataPlane(registry, refuse_unrecorded=True,
                           prediction_log=PredictionLog(tmp_path / "not-a-directory", on_failure="refuse"))
    with pytest.raises(NotRecorded) as refused:
        unloggable.infer("binary", table_from_records(rows, FEATURES), RequestContext("y"))
    assert refused.value.details == {"store": "prediction_log"}


def test_resolve_pins_the_version_decoding_saw(registry, rows):
    plane = DataPlane(registry)
    context = RequestContext("pin")
    decoded_for = plane.resolve("binary", context)
    slot = registry.slots["binary"]
    swapped = SimpleNamespace(name="binary", version="2")  # a promote lands while the body is being decoded
    slot.model, original = swapped, slot.model
    try:
        assert plane.resolve("binary", context) is decoded_for
        assert plane.resolve(None, context) is decoded_for  # the default model is the same one
        assert plane.resolve("binary", RequestContext("next")) is swapped  # the next request sees the new one
    finally:
        slot.model = original
    with pytest.raises(ModelNotFound):
        plane.resolve("nothing-of-that-name", RequestContext("z"))
    with pytest.raises(ModelNotFound, match="version '7'"):
        plane.resolve("binary", RequestContext("z"), version="7")


def test_concurrent_requests_share_batched_calls_and_each_gets_its_own_rows(repository_path, rows, dataset, in_process):
    registry, _ = registry_for(repository_path, BATCHING=True, BATCH_MAX_WAIT_MS=50)
    try:
        plane = DataPlane(registry)
        results = [None] * 6
        start = threading.Barrier(6)

        def ask(i):
            start.wait()
            results[i] = plane.infer("regression", table_from_records([rows[i]], FEATURES), RequestContext(str(i)))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        _, test = dataset
        expected = in_process["regression"].predict(test[FEATURES].iloc[:6]).tolist()
        assert np.allclose([r.predictions[0] for r in results], expected, atol=1e-9)
        batcher = registry.get("regression").batcher
        assert batcher.requests == 6 and batcher.batches < 6
    finally:
        for slot in registry.slots.values():
            slot.model.close()
