"""`agserve loadtest` against a real gunicorn: its counts agree with the server's own metrics."""
from __future__ import annotations

import json
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.servers import BIN, ROOT, gunicorn, server_env


def loadtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "agserve"), "loadtest", *args], cwd=ROOT, env=server_env(),
                          capture_output=True, text=True, timeout=120)


def answered(server, status: str) -> float:
    text = server.session().get(f"{server.base}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "agserve_requests"
               for s in f.samples if s.name == "agserve_requests_total" and s.labels["status"] == status
               and s.labels["route"] == "/models/<name>/predict")


def test_report_counts_equal_what_the_server_answered(repository_path, tmp_path):
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"data": to_records(mixed_frame(n=2, seed=101)[FEATURES])}))
    report_path = tmp_path / "report.json"
    with gunicorn(repository_path) as server:
        url = f"{server.base}/models/binary/predict"
        run = loadtest(url, "--concurrency", "4", "--requests", "200", "--data", str(body), "--key", server.key,
                       "--json", str(report_path))
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(report_path.read_text())
        assert report["total"] == report["successes"] == 200 and report["failures"] == {}
        assert answered(server, "200") == 200
        latency = report["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert "p99" in run.stdout and "200 (100.00%)" in run.stdout

        refused = loadtest(url, "-c", "2", "--duration", "1.5", "--data", str(body), "--key", "agk_wrong",
                           "--json", str(report_path))
        assert refused.returncode == 1
        report = json.loads(report_path.read_text())
        assert report["successes"] == 0 and report["failures"] == {"401": report["total"]} and report["total"] > 0
        assert "requests," in refused.stderr  # progress while running


def test_targets_outside_loopback_are_refused_before_any_request():
    run = loadtest("http://192.0.2.10:8000/health/live", "--requests", "1")
    assert run.returncode == 2 and "not a loopback address" in run.stderr
    bounds = loadtest("http://127.0.0.1:9/health/live", "--requests", "1", "--duration", "1")
    assert bounds.returncode == 2 and "exactly one of" in bounds.stderr
