"""Prometheus metrics from a real 2-worker gunicorn: counters equal what was sent, promtool accepts them."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import FEATURES, to_records
from tests.support.metrics import samples, scrape
from tests.support.servers import gunicorn, wait_for_every_worker

pytestmark = pytest.mark.server


def test_counters_equal_the_requests_sent_across_both_workers(repository_path, dataset, tmp_path):
    rows = to_records(dataset[1][FEATURES].head(3))
    sent = {"200": 0, "422": 0, "404": 0}
    # Cache off: rows predicted must count every row sent (the requests repeat rows).
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_CACHE="false") as server:
        headers = {"X-API-Key": server.key, "Connection": "close"}
        pids = server.worker_pids()
        for index, pid in enumerate(pids):
            with server.only_worker(pid):  # every worker answers its share
                for i in range(12 + index * 5):
                    body = {"data": rows} if i % 4 else {"data": [dict(rows[0], num="bad")]}
                    status = requests.post(f"{server.base}/models/binary/predict", json=body, headers=headers,
                                           timeout=10).status_code
                    sent[str(status)] += 1
                missing = requests.post(f"{server.base}/models/ghost/predict", json={"data": rows}, headers=headers,
                                        timeout=10)
                sent[str(missing.status_code)] += 1
        assert sent["200"] > 0 and sent["422"] > 0 and sent["404"] == 2

        text = scrape(server)
        route = "/models/<name>/predict"
        for status, count in sent.items():
            assert samples(text, "agserve_requests_total", route=route, status=status) == count, status
        assert samples(text, "agserve_rows_predicted_total", model="binary") == 3 * sent["200"]
        assert samples(text, "agserve_predicted_class_total", model="binary") == 3 * sent["200"]
        assert samples(text, "agserve_validation_failures_total", model="binary") == sent["422"]
        assert samples(text, "agserve_request_seconds_count", route=route) == sum(sent.values())
        assert samples(text, "agserve_batch_rows_sum", model="binary") == 3 * sent["200"]
        assert samples(text, "agserve_worker_starts_total") == 2 and samples(text, "agserve_database_up") == 1
        assert sorted(int(s.labels["pid"]) for f in text_string_to_metric_families(text) for s in f.samples
                      if s.name == "agserve_process_resident_bytes" and s.labels["role"] == "worker") == pids
        assert samples(text, "agserve_records_lost_total", store="monitoring") == 0  # present before any loss

        metrics_file = tmp_path / "metrics.txt"
        metrics_file.write_text(text)
        checked = subprocess.run(["promtool", "check", "metrics"], stdin=open(metrics_file), capture_output=True,
                                 text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # A worker killed outright: its requests stay counted, and its replacement adds to the same totals.
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(server.worker_pids()) != 2 or pids[0] in server.worker_pids()):
            time.sleep(0.2)
        wait_for_every_worker(server, 2, 60)  # the replacement too: one ready answer may come from the other worker
        after = scrape(server)
        assert samples(after, "agserve_requests_total", route=route, status="200") == sent["200"]
        assert samples(after, "agserve_rows_predicted_total", model="binary") == 3 * sent["200"]
        assert samples(after, "agserve_worker_starts_total") == 3  # the replacement counts: restarts show


def test_database_up_is_0_when_the_database_does_not_answer():
    from app.db import Database
    from app.metrics import ServerCollector
    from tests.support.servers import free_port

    dead = Database(f"postgresql://agserve@127.0.0.1:{free_port()}/agserve", timeout=1.0)
    families = {family.name: family for family in ServerCollector(dead, under_gunicorn=False).collect()}
    assert [sample.value for sample in families["agserve_database_up"].samples] == [0]
    assert [sample.labels["role"] for sample in families["agserve_process_resident_bytes"].samples] == ["worker"]


def test_metrics_need_the_metrics_scope(repository_path):
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS="binary") as server:
        predict_only = server.session().post(f"{server.base}/admin/keys", json={"owner": "app", "scopes": ["predict"]},
                                             timeout=10).json()["key"]
        assert requests.get(f"{server.base}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{server.base}/metrics", headers={"X-API-Key": predict_only},
                            timeout=10).status_code == 403


def test_predicted_classes_are_counted_per_class_for_a_large_answer():
    """10,000 labels counted at C speed give each class its own count (labels named by str, as before)."""
    import random

    from app import metrics

    rng = random.Random(3)
    labels = [rng.choice(["setosa", "versicolor", "virginica", "ünïcode"]) for _ in range(10_000)]
    metrics.observe_predictions("count-check", "1", "multiclass", labels)
    metrics.observe_predictions("count-check", "1", "binary", [0, 1, 1])  # integer labels count under their text
    for label in set(labels):
        assert metrics.PREDICTED_CLASSES.labels("count-check", "1", label)._value.get() == labels.count(label)
    assert metrics.PREDICTED_CLASSES.labels("count-check", "1", "1")._value.get() == 2
    assert metrics.PREDICTED_CLASSES.labels("count-check", "1", "0")._value.get() == 1
