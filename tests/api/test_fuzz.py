"""Schemathesis against a real gunicorn's /openapi.json with a valid API key: over 1,000 generated cases, no 5xx,
every response (errors included) as documented. The NDJSON report is kept under test-artifacts/; Schemathesis' own
cache (.schemathesis/ in its working directory) goes to a temporary folder, so a run leaves the checkout as it was.
The documented schema rarely reaches the value space (extremes, invalid Unicode, int64 edges): tests/codecs/test_properties.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.support.servers import ROOT, gunicorn

ARTIFACTS = ROOT / "test-artifacts"


def git_status() -> str | None:
    """`git status --porcelain` of the checkout, or None when the tests do not run from one."""
    result = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, timeout=60)
    return result.stdout if result.returncode == 0 else None


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(repository_path, tmp_path):
    repository = tmp_path / "repository"  # the fuzzer promotes and rolls back: never on the shared repository
    shutil.copytree(repository_path, repository)
    status_before = git_status()
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / "schemathesis.ndjson"
    with gunicorn(repository, AGSERVE_EXPLAIN_PERMUTATIONS="2") as server:  # explanations' cost, not their noise
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.base}/openapi.json",
             "-H", f"X-API-Key: {server.key}",
             "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
                         "content_type_conformance",
             "--max-examples", "40", "--seed", "20261126",
             # one worker: CPython 3.11's ast.parse, which Hypothesis calls, is not thread-safe (gh-106905)
             "--workers", "1", "--request-timeout", "30",
             "--report", "ndjson", "--report-ndjson-path", str(report)],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert git_status() == status_before, "the run changed or added files in the checkout"

    statuses: Counter = Counter()
    operations = set()
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished:
            operations.add(finished["recorder"]["label"])
            for interaction in finished["recorder"].get("interactions", {}).values():
                statuses[(interaction.get("response") or {}).get("status_code")] += 1
    assert sum(statuses.values()) >= 1000, statuses
    assert not [s for s in statuses if s is None or s >= 500], statuses
    assert statuses[200] >= 200  # most operations were reached with the key, not only refused
    assert len(operations) >= 35
