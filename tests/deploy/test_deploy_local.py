"""make deploy (DEPLOY_TARGET=local): start, then update under load with no failed request; status; undeploy."""
from __future__ import annotations

import json
import re
import shutil
import socket
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil

from app.auth.keys import KeyStore
from app.db import sqlite_file
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.servers import ROOT, free_port, server_env


MAKE_ERROR = re.compile(r"make(\[\d+\])?: \*\*\* ")


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_deploy_update_status_undeploy_without_a_failed_request(repository_path, tmp_path):
    port = free_port()
    auth_db = tmp_path / "auth.sqlite3"
    pepper = secrets.token_urlsafe(32)  # production refuses to run without one
    key, _ = KeyStore(sqlite_file(auth_db), pepper).create("deploy-test", ["predict"])
    env = server_env(AGSERVE_ENV="production", AGSERVE_KEY_PEPPER=pepper, AGSERVE_MODEL_REPOSITORY=str(repository_path),
                     AGSERVE_MODELS="binary", AGSERVE_BIND=f"127.0.0.1:{port}", AGSERVE_AUTH_DB=str(auth_db),
                     AGSERVE_MONITOR_DB=str(tmp_path / "monitor.sqlite3"), AGSERVE_PREDICTION_LOG_DIR="",
                     DEPLOY_DIR=str(tmp_path / "deploy"))
    try:
        started = make("deploy", env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "deploy: serving at" in started.stdout
        master = int((tmp_path / "deploy" / "agserve.pid").read_text())
        first_workers = {p.pid for p in psutil.Process(master).children()}

        out = tmp_path / "load.jsonl"
        body = json.dumps({"data": to_records(mixed_frame(n=1, seed=111)[FEATURES])})
        load = subprocess.Popen([sys.executable, "-m", "tests.support.loadgen", f"http://127.0.0.1:{port}/predict", key,
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
    assert after.returncode == 0 and after.stdout.strip() == "not running"


def servers_of(deploy_dir: Path) -> list[psutil.Process]:
    """The gunicorn processes started with this test's pidfile."""
    return [p for p in psutil.process_iter(["cmdline"]) if str(deploy_dir) in " ".join(p.info["cmdline"] or [])]


def last_line(result: subprocess.CompletedProcess) -> str:
    """The script's last line: make adds its own "make: *** [...] Error 1" after it ("make[1]: ***" under make test)."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if not MAKE_ERROR.match(line)]
    return lines[-1]


def test_each_failing_deploy_says_why_on_its_last_line_and_leaves_no_pidfile(repository_path, tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(repository_path, repository)
    deploy_dir = tmp_path / "deploy"
    auth_db = tmp_path / "auth.sqlite3"
    pepper = secrets.token_urlsafe(32)  # production refuses to run without one
    KeyStore(sqlite_file(auth_db), pepper).create("deploy-test", ["predict"])
    port = free_port()
    env = server_env(AGSERVE_ENV="production", AGSERVE_KEY_PEPPER=pepper, AGSERVE_MODEL_REPOSITORY=str(repository),
                     AGSERVE_MODELS="binary",
                     AGSERVE_BIND=f"127.0.0.1:{port}", AGSERVE_AUTH_DB=str(auth_db), WEB_CONCURRENCY="1",
                     AGSERVE_MONITOR_DB=str(tmp_path / "monitor.sqlite3"), AGSERVE_PREDICTION_LOG_DIR="",
                     DEPLOY_DIR=str(deploy_dir))
    pidfile = deploy_dir / "agserve.pid"

    try:
        with socket.socket() as taken:  # e.g. `make run` on the same port
            taken.bind(("127.0.0.1", port))
            taken.listen()
            busy = make("deploy", env)
        assert busy.returncode != 0 and not pidfile.exists()
        assert last_line(busy) == (f"deploy: FAILED: 127.0.0.1:{port} is already in use by another process "
                                   "(make run? another deploy?): stop it or set AGSERVE_BIND")

        broken = make("deploy", {**env, "AGSERVE_UNKNOWN_FIELDS": "sometimes"})
        assert broken.returncode != 0 and not pidfile.exists()
        assert last_line(broken) == ("deploy: FAILED: agserve: configuration error: AGSERVE_UNKNOWN_FIELDS must be "
                                     "one of raise, exclude (got 'sometimes')")

        weights = repository / "binary" / "1" / "predictor" / "predictor.pkl"
        original = weights.read_bytes()
        weights.write_bytes(original + b"\0")
        unloadable = make("deploy", env)
        assert unloadable.returncode != 0 and not pidfile.exists()
        assert last_line(unloadable) == ("deploy: FAILED: a model cannot be served, stopped the new server: binary: "
                                         "model binary version 1 failed its integrity check (changed: predictor.pkl); "
                                         "refusing to load it")
        assert servers_of(deploy_dir) == []

        weights.write_bytes(original)
        clean = make("deploy", env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert clean.stdout.splitlines()[-1].startswith(f"deploy: serving at http://127.0.0.1:{port}")
        assert pidfile.is_file()
    finally:
        stopped = make("undeploy", env)
        for leftover in servers_of(deploy_dir):  # only if a failing step left its server running
            leftover.kill()
    assert stopped.returncode == 0 and not pidfile.exists()


def test_a_master_without_workers_gets_a_reason_not_a_silent_exit(repository_path, tmp_path):
    """`pgrep -P` finds nothing while a master has no workers (yet): the script must go on and say why it stops."""
    deploy_dir = tmp_path / "deploy"
    deploy_dir.mkdir()
    auth_db = tmp_path / "auth.sqlite3"
    pepper = secrets.token_urlsafe(32)
    KeyStore(sqlite_file(auth_db), pepper).create("deploy-test", ["predict"])
    # Stands in for a master between its start and its first fork: alive, childless, unmoved by SIGHUP.
    master = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                               "signal.SIG_IGN); time.sleep(120)"])
    (deploy_dir / "agserve.pid").write_text(str(master.pid))
    env = server_env(AGSERVE_ENV="production", AGSERVE_KEY_PEPPER=pepper, AGSERVE_MODEL_REPOSITORY=str(repository_path),
                     AGSERVE_BIND=f"127.0.0.1:{free_port()}", AGSERVE_AUTH_DB=str(auth_db),
                     DEPLOY_DIR=str(deploy_dir), READY_TIMEOUT="2")
    try:
        result = make("deploy", env)
    finally:
        master.kill()
        master.wait()
    assert result.returncode != 0
    assert f"deploy: updating: graceful reload of gunicorn {master.pid} (workers )" in result.stdout
    assert last_line(result) == f"deploy: FAILED: not ready within 2s; see {deploy_dir}/agserve.log"
