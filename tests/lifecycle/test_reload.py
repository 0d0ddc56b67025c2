"""Versions switch under load with no failed request; a corrupt version never replaces the one serving."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from app.config import load_settings
from app.inference import ModelRepository
from app.lifecycle.validation import validate
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES, to_records
from tests.support.servers import BIN, ROOT, gunicorn, server_env

pytestmark = pytest.mark.server
SECONDS, THREADS, RATE = 24, 8, 200


@pytest.fixture()
def repository(tmp_path, repository_path, predictor_dirs, dataset):
    """binary v1 active, v2 imported and validated (so it may be promoted)."""
    root = tmp_path / "models"
    shutil.copytree(repository_path, root)
    models = ModelRepository(root)
    second = models.import_predictor(predictor_dirs["binary"], "binary")
    _, test = dataset
    settings = load_settings(environ={}, overrides={"ENV": "testing"})
    assert validate(second, test[FEATURES + [PROBLEMS["binary"][0]]], settings).passed
    return root


def start_load(server, out, row, seconds=SECONDS):
    body = json.dumps({"data": [row]})
    return subprocess.Popen([sys.executable, "-m", "tests.support.loadgen", f"{server.base}/predict", server.key,
                             str(seconds), str(THREADS), str(RATE), str(out), body], cwd=ROOT)


def read_load(out):
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_promote_and_rollback_under_load_lose_nothing(repository, tmp_path, dataset):
    row = to_records(dataset[1][FEATURES].head(1))[0]
    out = tmp_path / "load.jsonl"
    with gunicorn(repository, workers=2, AGSERVE_MODELS="binary", AGSERVE_RELOAD_INTERVAL="0.5") as server:
        load = start_load(server, out, row)
        time.sleep(6)
        promoted = server.session().post(f"{server.base}/admin/models/binary/promote", json={"version": "2"},
                                         timeout=10)
        promoted_at = time.time()
        assert promoted.status_code == 200, promoted.text
        time.sleep(8)
        env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_AUTH_DB=str(server.auth_db))
        rollback_started = time.time()  # the rollback commits before the command returns
        rolled = subprocess.run([str(BIN / "agserve"), "models", "rollback", "binary"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        rolled_at = time.time()
        assert rolled.returncode == 0, rolled.stderr
        tail = start_load(server, tmp_path / "tail.jsonl", row, seconds=10)  # load past a slow rollback
        assert load.wait(SECONDS + 30) == 0 and tail.wait(40) == 0

    responses = read_load(out)
    rate = len(responses) / SECONDS
    responses += read_load(tmp_path / "tail.jsonl")
    assert rate >= 100, f"the load client reached only {rate:.0f} requests/s"
    assert {r["status"] for r in responses} == {200}, [r for r in responses if r["status"] != 200][:5]
    assert {r["version"] for r in responses} == {"1", "2"}
    after_promote = [r["version"] for r in responses if promoted_at + 5 <= r["t"] < rollback_started]
    after_rollback = [r["version"] for r in responses if r["t"] >= rolled_at + 5]
    assert after_promote and set(after_promote) == {"2"}
    assert after_rollback and set(after_rollback) == {"1"}


def test_a_corrupt_version_never_replaces_the_one_serving(repository, tmp_path, dataset):
    corrupt = repository / "binary" / "3"
    shutil.copytree(repository / "binary" / "1", corrupt)
    with open(corrupt / "predictor" / "learner.pkl", "ab") as handle:
        handle.write(b"corrupt")
    row = to_records(dataset[1][FEATURES].head(1))[0]
    out, log = tmp_path / "load.jsonl", tmp_path / "server.log"
    with gunicorn(repository, workers=2, AGSERVE_MODELS="binary", AGSERVE_RELOAD_INTERVAL="0.5",
                  log_path=log) as server:
        load = start_load(server, out, row, seconds=12)
        time.sleep(3)
        forced = server.session().post(f"{server.base}/admin/models/binary/promote",
                                       json={"version": "3", "force": True}, timeout=10)
        assert forced.status_code == 200 and forced.json()["forced"] is True
        deadline, serving = time.monotonic() + 10, {}
        while time.monotonic() < deadline:
            serving = server.session().get(f"{server.base}/admin/models/binary/versions", timeout=10).json()["serving"]
            if serving["failed_version"] == "3":
                break
            time.sleep(0.2)
        assert serving["version"] == "1" and serving["status"] == "ready"
        assert serving["failed_version"] == "3"
        assert serving["error"].startswith("version 3 failed to load, still serving 1")
        assert "integrity check (changed: learner.pkl)" in serving["error"]
        assert load.wait(40) == 0

    responses = read_load(out)
    assert {r["status"] for r in responses} == {200}
    assert {r["version"] for r in responses} == {"1"}
    logged = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    failures = [e for e in logged if e["message"].startswith("model failed to load") and e.get("version") == "3"]
    assert len({e["pid"] for e in failures}) == 2, "each worker reports the failure"
    assert all("changed: learner.pkl" in e["message"] for e in failures)
