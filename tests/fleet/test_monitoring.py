"""Monitoring as one fleet: three replicas (see conftest.py) write traffic, drift, answered predictions and alert state
into one PostgreSQL, so feedback joins whichever replica answered, drift sums every replica's rows, and one evaluator
of the whole fleet sends each alert once, also after it is killed and another takes over.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time

import pytest

from tests.support.apps import PROBLEMS, build_app, client_with_key
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.fleet import ALERT_INTERVAL, RELOAD_INTERVAL, every_worker
from tests.support.servers import BIN, ROOT, eventually

pytestmark = pytest.mark.server
ROWS = 25  # per request


def requests_of(frame) -> list[list[dict]]:
    return [to_records(frame.iloc[start:start + ROWS][FEATURES]) for start in range(0, len(frame), ROWS)]


def spread(replicas, model: str, frame) -> list[str]:
    """frame's rows in requests of ROWS, sent to the replicas in turn; the answers' request ids."""
    ids = []
    for index, rows in enumerate(requests_of(frame)):
        replica = replicas[index % len(replicas)]
        answer = replica.session().post(f"{replica.base}/models/{model}/predict", json={"data": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["request_id"])
    return ids


def test_feedback_sent_to_c_joins_the_answers_of_a_and_b_and_gives_the_offline_metric(fleet, in_process):
    a, b, c = fleet.all
    name, label = "multiclass", PROBLEMS["multiclass"][0]
    rows = mixed_frame(n=100, seed=61)
    ids = spread([a, b], name, rows)  # requests 0 and 2 answered by A, 1 and 3 by B
    prediction_ids = [f"{request_id}:{row}" for request_id in ids for row in range(ROWS)]
    # Sent at once: C waits for A's and B's workers to write their answers (their next flush, within a second).
    answer = c.session().post(f"{c.base}/feedback", timeout=30, json={"feedback": [
        {"prediction_id": p, "actual": actual} for p, actual in zip(prediction_ids, rows[label])]})
    assert answer.status_code == 200 and answer.json()["accepted"] == 100, answer.text

    offline = in_process[name].evaluate(rows[FEATURES + [label]], silent=True)
    for replica in fleet.all:  # the same report whichever replica is asked
        report = replica.session().get(f"{replica.base}/admin/models/{name}/quality", timeout=30).json()
        assert report["outcomes"] == 100
        assert set(report["live"]) == {k for k, v in offline.items() if isinstance(v, (int, float))}
        for metric, value in report["live"].items():
            assert math.isclose(value, offline[metric], rel_tol=1e-9, abs_tol=1e-12), (metric, value, offline[metric])
    answered = fleet.postgres.execute("agserve", "SELECT count(*) FROM monitor_outcomes WHERE model = %s", name)
    assert answered == [(100,)]


def test_feedback_for_an_answer_not_yet_written_is_404_saying_retry_then_joins(fleet, dataset):
    """The answering worker is frozen before its flush: C waits two flush intervals, then says "retry"; once the
    worker writes its answer, the same feedback is accepted."""
    a, _, c = fleet.all
    row = to_records(dataset[1][FEATURES].head(1))
    for _ in range(5):  # bounded: a flush can, rarely, fall between the answer and the freeze
        pid = a.server.worker_pids()[0]
        with a.server.only_worker(pid), a.session() as session:
            session.headers["Connection"] = "close"
            request_id = session.post(f"{a.base}/models/binary/predict", json={"data": row}, timeout=10) \
                .json()["request_id"]
            os.kill(pid, signal.SIGSTOP)
        known = fleet.postgres.execute("agserve", "SELECT count(*) FROM monitor_predictions WHERE request_id = %s",
                                       request_id)
        if known == [(0,)]:
            break
        os.kill(pid, signal.SIGCONT)
    else:
        pytest.fail("every answer was flushed before its worker could be frozen")
    try:
        started = time.monotonic()
        early = c.session().post(f"{c.base}/feedback", json={"request_id": request_id, "actual": "yes"}, timeout=30)
        assert early.status_code == 404 and time.monotonic() - started >= 2.0  # it waited for the flush first
        assert "retry" in early.json()["details"]["items"]["0"]["id"][0]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert eventually(lambda: c.session().post(f"{c.base}/feedback", json={"request_id": request_id, "actual": "yes"},
                                               timeout=30).status_code == 200, 10, step=0.5)


def shifted(frame):
    frame = frame.copy()
    frame["num"] = frame["num"] + 6  # six standard deviations: PSI and out-of-range, no alert rule watches them
    return frame


def test_drift_over_three_replicas_equals_the_same_rows_through_one_server(fleet, read_only_models, tmp_path):
    a, b, c = fleet.all
    rows = shifted(mixed_frame(n=300, seed=62))
    spread([a, b, c], "drift", rows)
    url = "/admin/models/drift/drift"
    assert eventually(lambda: a.session().get(f"{a.base}{url}", timeout=30).json()["rows"] == 300, 10)
    through_fleet = [replica.session().get(f"{replica.base}{url}", timeout=30).json() for replica in fleet.all]

    one = build_app(tmp_path / "one.sqlite3", MODEL_REPOSITORY=str(read_only_models), MODELS="drift")
    client = client_with_key(one)
    for request in requests_of(rows):
        assert client.post("/models/drift/predict", json={"data": request}).status_code == 200
    through_one = client.get(url).json

    assert through_one["rows"] == 300 and through_one["features"]["num"]["psi"] > 1.0
    for report in through_fleet:
        assert report["features"] == through_one["features"]
        assert report["drifted_features"] == through_one["drifted_features"] == ["num"]


def test_the_default_model_set_through_one_replica_is_served_by_all_three(fleet, read_only_models):
    a = fleet.all[0]
    body = {"data": to_records(mixed_frame(n=1, seed=63)[FEATURES])}

    def default_everywhere():
        return every_worker(fleet, lambda r, s: s.post(f"{r.base}/predict", json=body, timeout=10)
                            .json()["model_info"]["name"])
    assert default_everywhere() == {"a": ["binary"] * 2, "b": ["binary"] * 2, "c": ["binary"] * 2}

    def set_default(name: str) -> float:
        done = subprocess.run([str(BIN / "agserve"), "models", "default", name], cwd=ROOT, env=a.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return time.monotonic()

    try:
        moved_at = set_default("multiclass")  # through A's settings, with the model folder read-only
        assert eventually(lambda: default_everywhere() == {r.name: ["multiclass"] * 2 for r in fleet.all},
                          RELOAD_INTERVAL + 5, step=0.2)
        assert time.monotonic() - moved_at < RELOAD_INTERVAL + 5
        assert fleet.postgres.execute("agserve", "SELECT name FROM default_model") == [("multiclass",)]
        audit = a.session().get(f"{a.base}/admin/audit?limit=5", timeout=10).json()["entries"]  # newest first
        assert next(e for e in audit if e["action"] == "model.default")["target"] == "multiclass"
        assert (read_only_models / "default.json").read_text().count("binary") == 1  # the file is never written
    finally:
        set_default("binary")
    assert eventually(lambda: default_everywhere() == {r.name: ["binary"] * 2 for r in fleet.all}, RELOAD_INTERVAL + 5)


def evaluator(replica) -> dict:
    return replica.session().get(f"{replica.base}/admin/alerts", timeout=10).json()["evaluator"]


def sent(alert_hook) -> list[tuple[str, str, str]]:
    return [(p["alert"]["rule"], p["alert"]["subject"], p["alert"]["state"]) for p in alert_hook.posts]


def test_an_alert_is_sent_once_fleet_wide_and_once_more_after_the_evaluator_is_killed(fleet, alert_hook):
    """Runs last in the package: it kills a replica."""
    assert sent(alert_hook) == []  # the drift so far (num) is watched by no rule
    colours = mixed_frame(n=150, seed=64)
    colours.loc[colours["color"].notna(), "color"] = "purple"  # never seen in training; as many missing as before
    spread(fleet.all, "drift", colours)
    firing = [("unseen-colours", "drift/color", "firing")]
    assert eventually(lambda: sent(alert_hook) == firing, 10)
    runs, started = evaluator(fleet.all[0])["runs"], time.monotonic()
    time.sleep(8 * ALERT_INTERVAL)  # still firing, evaluated again and again
    assert sent(alert_hook) == firing
    leader = evaluator(fleet.all[0])
    # One evaluation per interval in the whole fleet, not one per worker (six here).
    assert 4 <= leader["runs"] - runs <= (time.monotonic() - started) / ALERT_INTERVAL + 2, (runs, leader)
    killed = fleet.replicas[leader["replica"]]
    log = killed.session().get(f"{killed.base}/admin/alerts", timeout=10).json()["log"]
    assert [(e["kind"], e["replica"], e["pid"]) for e in log] == [("firing", killed.name, leader["pid"])]
    killed.kill()
    killed_at = time.monotonic()
    others = [r for r in fleet.all if r is not killed]
    assert eventually(lambda: evaluator(others[0])["replica"] != killed.name, 15, step=0.2)
    took_over = time.monotonic() - killed_at
    successor = evaluator(others[0])
    runs = successor["runs"]
    assert eventually(lambda: evaluator(others[1])["runs"] >= runs + 4, 10)  # the successor keeps evaluating
    assert sent(alert_hook) == firing  # it knew the condition was announced: nothing sent again

    gaps = mixed_frame(n=200, seed=65)
    gaps["cnt"] = None  # missing counts, where the reference has none
    spread(others, "drift", gaps)
    assert eventually(lambda: len(alert_hook.posts) == 2, 10)
    time.sleep(8 * ALERT_INTERVAL)
    assert sent(alert_hook) == firing + [("missing-counts", "drift/cnt", "firing")]
    assert alert_hook.posts[1]["alert"]["replica"] == evaluator(others[0])["replica"]
    assert fleet.postgres.execute("agserve", "SELECT rule, kind FROM monitor_alert_log ORDER BY seq") == [
        ("unseen-colours", "firing"), ("missing-counts", "firing")]
    assert took_over < 5, took_over  # the lock went with the killed process's connection
