"""make deploy DEPLOY_TARGET=k8s: the script's decisions (gate, image tag, one apply, rollback on a failed rollout or
smoke test). This machine has no Docker engine and no cluster, so docker and kubectl are recording stand-ins here;
the gate (kubernetes-validate, agserve models validate) is real, and the smoke check runs for real against a
gunicorn serving the repository. What a real cluster does with the manifests is not shown by this test."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from app.inference import ModelRepository
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES
from tests.support.servers import BIN, ROOT, gunicorn, server_env

KUBECTL = r"""#!/usr/bin/env bash
# Stand-in kubectl: records its arguments, one call a line; answers as the test's environment says.
line="kubectl $*"; echo "${line//$'\n'/\\n}" >> "$CALLS"
[ "$1" = --namespace ] && shift 2
case "$1 $2" in
  "get deployment/agserve") [ -n "$PREVIOUS_REVISION" ] && echo "$PREVIOUS_REVISION|$PREVIOUS_MODELS" && exit 0
                            echo 'Error from server (NotFound): deployments.apps "agserve" not found' >&2; exit 1 ;;
  "get secret") [ -n "$SECRET_JSON" ] && echo "$SECRET_JSON" && exit 0
                echo 'Error from server (NotFound): secrets "agserve-secrets" not found' >&2; exit 1 ;;
  "apply -f") rm -rf "$APPLIED" && cp -r "$3" "$APPLIED" ;;
  "rollout status") n=$(grep -c 'rollout status' "$CALLS"); [ "$n" -gt 1 ] || [ "$ROLLOUT_FAILS" != 1 ] ;;
  "rollout undo") ;;
  "exec deployment/agserve") shift 3; [ "$1" = python ] && shift; exec "$SMOKE_PYTHON" "$@" ;;
  *) echo "stand-in kubectl: unexpected $*" >&2; exit 3 ;;
esac
"""
def secret_json(**values: str) -> str:
    """What `kubectl get secret -o json` prints for a Secret holding these values."""
    return json.dumps({"kind": "Secret", "metadata": {"name": "agserve-secrets"},
                       "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})


REAL_SECRET = secret_json(AGSERVE_KEY_PEPPER=secrets.token_urlsafe(32), AGSERVE_JWT_SECRET=secrets.token_urlsafe(32))
DOCKER = """#!/usr/bin/env bash
echo "docker $*" >> "$CALLS"
"""


@pytest.fixture(scope="module")
def k8s_setup(repository_path, predictor_dirs, dataset, tmp_path_factory):
    """A copy of two models of the session repository (the gate writes validation.json), their holdout CSVs,
    stand-in docker/kubectl, and a real gunicorn serving only the binary model."""
    root = tmp_path_factory.mktemp("k8s")
    repository = root / "repository"
    for name in ("binary", "regression"):
        shutil.copytree(repository_path / name, repository / name)
    ModelRepository(repository).import_predictor(predictor_dirs["binary"], "binary")  # version 2, not active
    _, test = dataset
    data = root / "data"
    data.mkdir()
    for name in ("binary", "regression"):
        test[FEATURES + [PROBLEMS[name][0]]].to_csv(data / f"{name}.csv", index=False)
    tools = root / "bin"
    tools.mkdir()
    for name, text in (("kubectl", KUBECTL), ("docker", DOCKER)):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    with gunicorn(repository, workers=1, AGSERVE_MODELS="binary") as server:
        yield repository, data, tools, server


def deploy(setup, tmp_path, **env) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    repository, data, tools, server = setup
    tmp_path.mkdir(parents=True, exist_ok=True)
    calls, applied = tmp_path / "calls.txt", tmp_path / "applied"
    calls.touch()
    settings = {"AGSERVE_MODEL_REPOSITORY": str(repository), "AGSERVE_MODELS": "binary",
                "AGSERVE_AUTH_DB": str(tmp_path / "auth.sqlite3"), "VALIDATION_DATA_DIR": str(data),
                "REGISTRY": "registry.test/team", "NAMESPACE": "prod", "SMOKE_URL": server.base,
                "CALLS": str(calls), "APPLIED": str(applied), "SMOKE_PYTHON": str(BIN / "python"),
                "PREVIOUS_REVISION": "", "PREVIOUS_MODELS": "", "ROLLOUT_FAILS": "0", "SECRET_JSON": REAL_SECRET, **env}
    environment = server_env(**settings)
    environment["PATH"] = f"{tools}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(["make", "-s", "deploy", "DEPLOY_TARGET=k8s"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=300)
    return result, calls.read_text().splitlines(), applied


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_good_deploy_builds_the_tagged_image_applies_it_once_and_passes_the_smoke_test(k8s_setup, tmp_path):
    result, calls, applied = deploy(k8s_setup, tmp_path, PREVIOUS_REVISION="6")
    assert result.returncode == 0, result.stdout + result.stderr
    image = f"registry.test/team/agserve:{commit()}-binary-1"
    assert calls == ["kubectl --namespace prod get secret agserve-secrets -o json",
                     f"docker build -t {image} .", f"docker push {image}",
                     "kubectl --namespace prod get deployment/agserve -o "
                     "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}|"
                     "{.metadata.annotations.agserve\\.io/models}",
                     f"kubectl --namespace prod apply -f {calls[4].split()[-1]}",
                     "kubectl --namespace prod rollout status deployment/agserve --timeout=10m",
                     calls[6]]
    assert calls[6].startswith("kubectl --namespace prod exec deployment/agserve -- python -c ")
    assert calls[6].endswith(f" {k8s_setup[3].base} binary=1")
    # Every manifest applied, the Deployment with the new image in place of the placeholder; never a Secret.
    assert sorted(p.name for p in applied.iterdir()) == sorted(p.name for p in (ROOT / "deploy/k8s").glob("*.yaml"))
    assert not [p for p in applied.iterdir() if "kind: Secret" in p.read_text()]
    assert f"image: {image}" in (applied / "deployment.yaml").read_text()
    assert "agserve:latest" not in (applied / "deployment.yaml").read_text()
    assert 'agserve.io/models: "binary=1"' in (applied / "deployment.yaml").read_text()  # restored on a rollback
    assert "smoke test: ready versions not served: none" in result.stdout and f"deploy: deployed {image}" in result.stdout
    assert "validation PASSED" in result.stdout


def test_a_failed_rollout_rolls_back_to_the_running_revision(k8s_setup, tmp_path):
    result, calls, _ = deploy(k8s_setup, tmp_path, PREVIOUS_REVISION="6", ROLLOUT_FAILS="1")
    assert result.returncode != 0
    assert calls[-2:] == ["kubectl --namespace prod rollout undo deployment/agserve --to-revision=6",
                          "kubectl --namespace prod rollout status deployment/agserve --timeout=10m"]
    assert not [c for c in calls if " exec " in c]  # no smoke test of a rollout that never finished
    assert "deploy: FAILED: rollout of registry.test/team/agserve:" in result.stderr
    assert "(rolled back to revision 6)" in result.stderr


def test_a_rollback_restores_the_model_versions_active_before_not_only_the_image(k8s_setup, tmp_path):
    """binary 2 was promoted for this deploy; the rollout fails; the revision before served binary 1."""
    repository, _, _, _ = k8s_setup
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_AUTH_DB=str(tmp_path / "auth.sqlite3"))
    promoted = subprocess.run([str(BIN / "agserve"), "models", "promote", "binary", "2", "--force"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
    assert promoted.returncode == 0, promoted.stderr
    result, calls, applied = deploy(k8s_setup, tmp_path, PREVIOUS_REVISION="6", PREVIOUS_MODELS="binary=1",
                                    ROLLOUT_FAILS="1")
    assert result.returncode != 0
    assert 'agserve.io/models: "binary=2"' in (applied / "deployment.yaml").read_text()
    assert calls[-2] == "kubectl --namespace prod rollout undo deployment/agserve --to-revision=6"
    assert "deploy: restoring model binary to version 1" in result.stdout
    assert "(rolled back to revision 6 and models binary=1)" in result.stderr
    listed = subprocess.run([str(BIN / "agserve"), "models", "list", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert [(m["version"], m["active"]) for m in json.loads(listed.stdout) if m["name"] == "binary"] == \
        [("1", True), ("2", False)]


def test_a_failed_smoke_test_rolls_back_and_a_first_deploy_says_there_is_nothing_to_roll_back_to(k8s_setup, tmp_path):
    # The gate validates regression version 1, but the pods (the real server) serve only binary.
    result, calls, _ = deploy(k8s_setup, tmp_path, AGSERVE_MODELS="regression", PREVIOUS_REVISION="3")
    assert result.returncode != 0
    assert "not serving the validated versions: {'regression': '1'}" in result.stderr
    assert calls[-2] == "kubectl --namespace prod rollout undo deployment/agserve --to-revision=3"
    assert "deploy: FAILED: smoke test of registry.test/team/agserve:" in result.stderr

    first, first_calls, _ = deploy(k8s_setup, tmp_path / "first", AGSERVE_MODELS="regression")
    assert first.returncode != 0 and "(first deploy: nothing to roll back to)" in first.stderr
    assert not [c for c in first_calls if "undo" in c]


def test_a_model_that_fails_the_gate_stops_the_deploy_before_any_image_is_built(k8s_setup, tmp_path):
    result, calls, _ = deploy(k8s_setup, tmp_path, VALIDATE_ARGS="--max-latency-ms 0.001")
    assert result.returncode != 0
    assert "deploy: FAILED: model binary version 1 did not pass validation" in result.stderr
    assert calls == ["kubectl --namespace prod get secret agserve-secrets -o json"]  # nothing built or applied

    unknown, calls, _ = deploy(k8s_setup, tmp_path / "unknown", AGSERVE_MODELS="binary,nosuchmodel")
    assert unknown.returncode != 0 and "no active version of nosuchmodel" in unknown.stderr
    assert calls == ["kubectl --namespace prod get secret agserve-secrets -o json"]


@pytest.mark.parametrize("secret, says", [
    ("", "no Secret agserve-secrets in namespace prod: create it first"),
    (secret_json(AGSERVE_JWT_SECRET=secrets.token_urlsafe(32)), "the Secret agserve-secrets has no AGSERVE_KEY_PEPPER"),
    (secret_json(AGSERVE_KEY_PEPPER="replace-with-a-long-random-string"),
     "AGSERVE_KEY_PEPPER in the Secret agserve-secrets is a placeholder from a template"),
    (secret_json(AGSERVE_KEY_PEPPER=secrets.token_urlsafe(32), AGSERVE_JWT_SECRET="s" * 40),
     "AGSERVE_JWT_SECRET in the Secret agserve-secrets has too little entropy"),
])
def test_the_operators_secret_must_exist_and_be_real_and_is_never_applied(k8s_setup, tmp_path, secret, says):
    result, calls, applied = deploy(k8s_setup, tmp_path, SECRET_JSON=secret)
    assert result.returncode != 0 and says in result.stderr, result.stderr
    assert calls == ["kubectl --namespace prod get secret agserve-secrets -o json"]  # nothing built or applied
    assert not applied.exists() and "validation gate" not in result.stdout  # it fails before the slow gate
