"""The monitoring tables on both engines the server runs on (the SQLite file, a real PostgreSQL): concurrent writers'
counts add up exactly, evaluators that overlap never send a change twice, and retention keeps every table bounded."""
from __future__ import annotations

import itertools
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.db import Database, open_database
from app.monitoring import store as store_module
from app.monitoring.alerts import AlertConfig, Evaluator, Rule
from app.monitoring.store import MonitorStore
from tests.support.pgserver import postgres_server

_names = itertools.count()


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Database:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").create_database(f"monitor{next(_names)}")
        settings = {"DATABASE_URL": url, "AUTH_DB": "", "DATABASE_TIMEOUT": 10}
    else:
        settings = {"DATABASE_URL": "", "AUTH_DB": str(tmp_path / "agserve.sqlite3"), "DATABASE_TIMEOUT": 10}
    database = open_database(settings)
    yield database
    database.dispose()


def test_concurrent_flushes_add_up_exactly(database):
    """Eight writers (workers of several replicas) flush the same cells in their own orders, twenty times each."""
    store = MonitorStore(database)
    traffic = [(100 + b, "m", "2xx", latency, 1) for b in range(5) for latency in range(10)]
    drift = [("m", "1", 100 + b, f"f{f}", f"b{c}", 2) for b in range(5) for f in range(4) for c in range(5)]
    failures = []

    def writer(seed: int) -> None:
        order = random.Random(seed)
        for flush in range(20):
            mine_t, mine_d = traffic[:], drift[:]
            order.shuffle(mine_t)
            order.shuffle(mine_d)
            try:
                store.add(mine_t, mine_d, [(f"r{seed}-{flush}", 1000.0, "m", "1", 1, b"{}")])
            except Exception as exc:  # a deadlock or lost update would show up here or in the sums
                failures.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert {count for _, _, count in store.traffic(1000)} == {8 * 20 * 5}  # five buckets of one per writer and flush
    cells = store.drift_cells("m", "1", 1000)
    assert {count for feature in cells.values() for count in feature.values()} == {8 * 20 * 5 * 2}
    assert len(store.predictions([f"r{s}-{f}" for s in range(8) for f in range(20)])) == 160


class Readings:
    def __init__(self):
        self.values: dict[str, float] = {}

    def __call__(self, rule):
        return [(subject, value, 1000) for subject, value in self.values.items()]


def test_evaluators_that_overlap_send_each_change_once(database):
    """Four evaluators at once (a leader cut off while still running, and its successor, many times over): every
    condition's firing and resolution is sent by exactly one of them."""
    store, readings = MonitorStore(database), Readings()
    rule = Rule("psi", "drift_psi", above=0.2, cooldown_seconds=0)
    evaluators = [Evaluator(store, AlertConfig([rule]), readings) for _ in range(4)]
    subjects = [f"m/f{i}" for i in range(12)]
    with ThreadPoolExecutor(len(evaluators)) as pool:
        for phase, state in enumerate(["firing", "resolved", "firing", "resolved"]):
            readings.values = {s: 0.9 if state == "firing" else 0.1 for s in subjects}
            results = list(pool.map(lambda evaluator: evaluator.evaluate(), evaluators))
            sent = sorted((alert["subject"], alert["state"]) for result in results for alert in result)
            assert sent == [(s, state) for s in sorted(subjects)], phase
    assert len(store.alerts(limit=1000)["log"]) == 4 * len(subjects)


def test_retention_keeps_every_table_bounded(database, monkeypatch):
    monkeypatch.setattr(store_module, "ALERT_LOG_KEPT", 5)
    store, readings = MonitorStore(database), Readings()
    now = 1_000_000.0
    old, new = now - 7200, now - 60
    store.add([(store_module.bucket_of(old), "m", "2xx", 1, 1), (store_module.bucket_of(new), "m", "2xx", 1, 1)],
              [("m", "1", store_module.bucket_of(old), "f", "n", 1), ("m", "1", store_module.bucket_of(new), "f", "n", 1)],
              [("old", old, "m", "1", 1, b"{}"), ("new", new, "m", "1", 1, b"{}")])
    store.add_outcomes([("old:0", "old", 0, "m", "1", old, "yes"), ("new:0", "new", 0, "m", "1", new, "yes")])
    rule = Rule("psi", "drift_psi", above=0.2, cooldown_seconds=0)
    clock = [old]
    evaluator = Evaluator(store, AlertConfig([rule]), readings, clock=lambda: clock[0])
    for _ in range(4):  # 9 events: m/a fires and resolves four times; m/b fires once and keeps firing
        readings.values = {"m/a": 0.9, "m/b": 0.9}
        evaluator.evaluate()
        readings.values = {"m/b": 0.9}
        evaluator.evaluate()
    clock[0] = now

    store.prune(now - 3600, now - 3600, now - 3600)
    assert store.traffic(0) == [("2xx", 1, 1)] and store.drift_cells("m", "1", 0) == {"f": {"n": 1}}
    assert set(store.predictions(["old", "new"])) == {"new"}
    assert [row for _, _, row in store.joined("m", "1", 0, 10)] == [0]  # the newer outcome only
    log = store.alerts(limit=100)["log"]
    assert len(log) == 5 and log[0]["seq"] - log[-1]["seq"] == 4  # the newest five events
    assert store.firing_subjects("psi") == ["m/b"]  # a firing condition stays, whatever its age
    with store.alert_condition("psi", "m/a") as condition:  # a resolved one past its cool-down is gone
        assert (condition.firing, condition.last_sent) == (False, None)
