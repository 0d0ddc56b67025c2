"""The agserve command, run as a user would: a real subprocess of the installed console script."""
from __future__ import annotations

import json
import subprocess
import time

from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES
from tests.support.servers import BIN, ROOT, server_env


def agserve(*args: str, repository) -> subprocess.CompletedProcess:
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_AUTH_DB=str(repository.parent / "auth.db"))
    return subprocess.run([str(BIN / "agserve"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_then_list(tmp_path, predictor_dirs, dataset):
    _, test = dataset
    reference = tmp_path / "holdout.csv"
    test[FEATURES + [PROBLEMS["binary"][0]]].to_csv(reference, index=False)
    repository = tmp_path / "models"

    first = agserve("models", "import", str(predictor_dirs["binary"]), "--name", "churn",
                    "--reference-data", str(reference), repository=repository)
    second = agserve("models", "import", str(predictor_dirs["binary"]), "--name", "churn", "--version", "b",
                     repository=repository)

    assert first.returncode == 0, first.stderr
    assert "imported churn version 1" in first.stdout
    assert "not served yet (active version of churn: none); next: agserve models validate churn 1 && " in first.stdout
    assert second.returncode == 0 and "--data LABELLED.csv && agserve models promote churn b" in second.stdout
    assert agserve("models", "promote", "churn", "1", "--force", repository=repository).returncode == 0
    listing = json.loads(agserve("models", "list", "--json", repository=repository).stdout)
    assert [(r["name"], r["version"], r["active"], r["default"]) for r in listing] == [
        ("churn", "1", True, True), ("churn", "b", False, True)]
    assert listing[0]["problem_type"] == "binary"
    manifest = json.loads((repository / "churn" / "1" / "manifest.json").read_text())
    assert manifest["reference"]["scores"] and manifest["reference"]["feature_importance"]
    table = agserve("models", "list", repository=repository).stdout.splitlines()
    assert table[0] == "default model (POST /predict): churn (set with agserve models default NAME)"
    assert table[1].split() == ["NAME", "VERSION", "ACTIVE", "PROBLEM", "METRIC", "AUTOGLUON", "IMPORTED"]
    assert table[2].split()[:3] == ["churn", "1", "*"]


def test_import_of_a_non_predictor_fails_with_a_message(tmp_path):
    (tmp_path / "junk").mkdir()
    result = agserve("models", "import", str(tmp_path / "junk"), "--name", "junk", repository=tmp_path / "models")
    assert result.returncode == 1
    assert result.stderr.strip() == f"agserve: {tmp_path / 'junk'} is not a saved AutoGluon TabularPredictor (no predictor.pkl)"


def test_list_of_an_empty_repository(tmp_path):
    result = agserve("models", "list", repository=tmp_path / "nothing")
    assert result.returncode == 0 and "no models in" in result.stdout


def test_keys_and_tokens_from_the_command_line(tmp_path, repository_path):
    from tests.support.apps import build_app

    secret = "c" * 40
    env_settings = {"AGSERVE_JWT_SECRET": secret}

    def run(*args):
        env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository_path), AGSERVE_AUTH_DB=str(tmp_path / "auth.db"),
                         **env_settings)
        return subprocess.run([str(BIN / "agserve"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)

    created = run("keys", "create", "--owner", "billing", "--scopes", "predict,model_info", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    listed = json.loads(run("keys", "list").stdout)
    assert [(k["id"], k["owner"], k["scopes"]) for k in listed] == [(key_id, "billing", ["model_info", "predict"])]
    assert listed[0]["expires_at"] and key not in run("keys", "list").stdout

    token = run("token", "issue", "--sub", "svc", "--scopes", "model_info", "--ttl", "5m").stdout.strip()
    app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary", JWT_SECRET=secret,
                    LOAD_MODELS_ON_START=False)
    client = app.test_client()
    assert client.get("/models", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    assert run("keys", "revoke", key_id).returncode == 0
    # Another process revoked it: this server refuses it within AGSERVE_KEY_CACHE_SECONDS (0.5 s), and for good.
    deadline = time.monotonic() + 1
    while client.get("/models", headers={"X-API-Key": key}).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [client.get("/models", headers={"X-API-Key": key}).status_code for _ in range(3)] == [401] * 3
    assert run("keys", "revoke", "ffffffffffff").returncode == 1
    bad = run("keys", "create", "--owner", "x", "--scopes", "root")
    assert bad.returncode == 2 and "scopes are a comma-separated list" in bad.stderr
    actions = [e["action"] for e in app.extensions["agserve.keys"].audit_log()]
    assert actions == ["key.revoke", "token.issue", "key.create"]


def test_every_scope_is_named_in_the_help_and_the_api_docs():
    from app.auth import SCOPES

    for command in (["keys", "create", "--help"], ["token", "issue", "--help"]):
        help_text = subprocess.run([str(BIN / "agserve"), *command], capture_output=True, text=True, timeout=60).stdout
        assert f"Comma-separated: {', '.join(SCOPES)}." in " ".join(help_text.split()), help_text
    readme = " ".join((ROOT / "docs" / "api-and-auth.md").read_text().split())
    assert ("right scope: `predict` for predictions, `explain` for explanations, `model_info` for `/models…` and "
            "`/model/info`, `admin` for `/admin/…`, `metrics` for `/metrics`") in readme
    assert f"agserve keys create --owner me --scopes {','.join(SCOPES)}" in readme


def test_the_demo_goes_through_the_gate_and_says_how_to_get_a_key_when_keys_exist(tmp_path):
    from app.auth.keys import KeyStore
    from app.db import sqlite_file
    from app.inference import ModelRepository

    repository = tmp_path / "models"
    KeyStore(sqlite_file(tmp_path / "auth.db")).create("earlier", ["predict"])  # keys exist: the demo makes none
    result = agserve("demo", "--bind", "127.0.0.1:8123", repository=repository)
    assert result.returncode == 0, result.stderr
    assert "imported, validated and promoted iris version 1" in result.stdout
    assert ("API keys exist already: set AGSERVE_KEY to one of yours; lost it? create one with every scope:\n"
            "  .venv/bin/agserve keys create --owner me --scopes predict,explain,model_info,admin,metrics") in result.stdout
    from app.inference.activations import DatabaseActivations
    models = ModelRepository(repository, DatabaseActivations(sqlite_file(tmp_path / "auth.db"), repository))
    assert models.active_version("iris") == "1" and models.default_model() == "iris"
    assert json.loads((repository / "iris" / "1" / "validation.json").read_text())["passed"] is True
    assert "curl -s http://127.0.0.1:8123/predict " in result.stdout
