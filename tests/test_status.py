"""GET /admin/status from a real 2-worker gunicorn, and the client identity in request log lines."""
from __future__ import annotations

import json

import psutil
import pytest

from tests.support.data import FEATURES, to_records
from tests.support.servers import gunicorn

pytestmark = pytest.mark.server


def test_status_reports_master_workers_disk_requests_and_models(repository_path, dataset, tmp_path):
    log = tmp_path / "server.log"
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_LOG_LEVEL="info",
                  log_path=log) as server:
        http = server.session()
        for _ in range(5):
            assert http.post(f"{server.base}/predict", json={"data": to_records(dataset[1][FEATURES].head(1))},
                             timeout=10).status_code == 200
        body = http.get(f"{server.base}/admin/status", timeout=10).json()

        assert body["server"].startswith("gunicorn")
        assert body["master"]["pid"] == server.process.pid
        assert sorted(w["pid"] for w in body["workers"]) == server.worker_pids()
        assert all(w["rss_mb"] > 50 for w in body["workers"])
        assert body["answered_by"] in server.worker_pids() and body["uptime_seconds"] > 0
        assert body["requests_served"] >= 5  # and the readiness checks of the test helper
        assert body["disk"]["models"]["free_mb"] > 0
        model = body["models"]["binary"]
        assert model["status"] == "ready" and model["load_seconds"] > 0 and model["warmup_ms"] > 0
        assert model["error"] is None
        assert psutil.Process(body["master"]["pid"]).name().startswith(("gunicorn", "python"))

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line["logger"] == "agserve.access" and line["path"] == "/predict"]
    assert len(requests_logged) == 5
    key_id = server.key.split("_")[1]
    assert all(line["client"] == f"key:{key_id}" and line["status"] == 200 and line["request_id"]
               and line["model"] == "binary" and line["rows"] == 1 for line in requests_logged)
    assert server.key not in log.read_text()
