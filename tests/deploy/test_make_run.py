"""`make run` sets up, trains and imports the demo model, serves it, and prints a curl command that works."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT, free_port, server_env, wait_until

pytestmark = pytest.mark.server


def test_make_run_serves_the_demo_and_its_curl_command_works(tmp_path):
    venv = Path(sys.prefix)
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes()
                                     for name in ("requirements.txt", "requirements-dev.txt", "setup.cfg")))
    stamp = venv / f".installed-{digest.hexdigest()[:12]}"
    # Otherwise make would rebuild the very environment this test runs in.
    assert stamp.exists(), "run the suite through `make test`, which installs the environment make uses"
    port = free_port()
    env = server_env(AGSERVE_BIND=f"127.0.0.1:{port}", AGSERVE_MODEL_REPOSITORY=str(tmp_path / "models"),
                     AGSERVE_AUTH_DB=str(tmp_path / "var" / "agserve.sqlite3"))
    env.pop("AGSERVE_ENV")
    output = tmp_path / "make-run.log"
    with open(output, "wb") as log:
        process = subprocess.Popen(["make", "--no-print-directory", "run", f"VENV={venv}"], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(f"http://127.0.0.1:{port}/health/ready", 180, process)
        text = output.read_text()
        command = re.search(r"^\s*(curl .*)$", text, flags=re.MULTILINE).group(1)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
        assert "X-API-Key: agk_" in command, "the first run prints a working key"
        body = json.loads(result.stdout)
        assert body["model_info"]["name"] == "iris"
        assert body["predictions"][0] in {"setosa", "versicolor", "virginica"}
        assert sum(body["probabilities"][0].values()) == pytest.approx(1.0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    assert (tmp_path / "models" / "iris" / "1" / "manifest.json").is_file()
