"""make deploy (DEPLOY_TARGET=local): start, then update under load with no failed request; status; undeploy."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from app.auth.keys import KeyStore
from app.db import sqlite_file
from tests.data import FEATURES, mixed_frame, to_records
from tests.servers import ROOT, free_port, server_env


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_deploy_update_status_undeploy_without_a_failed_request(repository_path, tmp_path):
    port = free_port()
    auth_db = tmp_path / "auth.sqlite3"
    key, _ = KeyStore(sqlite_file(auth_db)).create("deploy-test", ["predict"])
    env = server_env(AGSERVE_ENV="production", AGSERVE_MODEL_REPOSITORY=str(repository_path),
                     AGSERVE_MODELS="binary", AGSERVE_BIND=f"127.0.0.1:{port}", AGSERVE_AUTH_DB=str(auth_db),
                     AGSERVE_MONITOR_DB=str(tmp_path / "monitor.sqlite3"), AGSERVE_PREDICTION_LOG_DIR="",
                     DEPLOY_DIR=str(tmp_path / "deploy"))
    try:
        started = make("deploy", env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "deploy: serving at" in started.stdout
        master = int((tmp_path / "deploy" / "agserve.pid").read_text())
        first_workers = {p.pid for p in psutil.Process(master).children()}

        out = Path(tempfile.mkdtemp()) / "load.jsonl"
        body = json.dumps({"data": to_records(mixed_frame(n=1, seed=111)[FEATURES])})
        load = subprocess.Popen([sys.executable, "-m", "tests.loadgen", f"http://127.0.0.1:{port}/predict", key,
                                 "10", "4", "80", str(out), body], cwd=ROOT)
        time.sleep(2)
        updated = make("deploy", env)  # the same command again: an update
        assert updated.returncode == 0, updated.stdout + updated.stderr
        assert "graceful reload" in updated.stdout and "updated: new workers" in updated.stdout
        assert load.wait(60) == 0
        results = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(results) > 300 and [r for r in results if r["status"] != 200] == []
        assert int((tmp_path / "deploy" / "agserve.pid").read_text()) == master  # same master, new workers
        assert not first_workers & {p.pid for p in psutil.Process(master).children()}

        status = make("status", env)
        assert status.returncode == 0 and f"running: gunicorn {master}" in status.stdout
    finally:
        stopped = make("undeploy", env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not psutil.pid_exists(master) or psutil.Process(master).status() == psutil.STATUS_ZOMBIE
    after = make("status", env)
    assert after.returncode != 0 and "not running" in after.stdout
