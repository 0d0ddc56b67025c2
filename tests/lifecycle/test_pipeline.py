"""From a CSV to a served, validated model with the CLI alone; the gate refuses what it must."""
from __future__ import annotations

import json
import shutil

import pytest

from app.inference import ModelRepository
from app.inference.manifest import file_checksums
from app.lifecycle.training import installed_hyperparameters
from tests.support.answers import expected_answers
from tests.support.commands import agserve
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.servers import gunicorn

TINY = json.dumps({"GBM": {"num_boost_round": 30}})


def served_repository(repository, auth_db) -> ModelRepository:
    """The repository as the CLI and the server see it: activation in the database."""
    from app.db import sqlite_file
    from app.inference.activations import DatabaseActivations

    return ModelRepository(repository, DatabaseActivations(sqlite_file(auth_db), repository))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A repository made with the CLI alone from a CSV: churn version 1 trained, validated and promoted, then
    version 2 trained. Each step's result is kept, with the active version right after the first train."""
    root = tmp_path_factory.mktemp("lifecycle")
    data = root / "churn.csv"
    mixed_frame(500, seed=3)[FEATURES + ["y_binary"]].to_csv(data, index=False)
    repository, auth_db = root / "models", root / "auth.sqlite3"

    def run(*args):
        return agserve(*args, repository=repository, auth_db=auth_db)

    train = ("models", "train", str(data), "--label", "y_binary", "--name", "churn", "--time-limit", "60",
             "--cpus", "1", "--hyperparameters", TINY)
    steps = {"train 1": run(*train)}
    steps["active after train 1"] = ModelRepository(repository).active_version("churn")
    steps["promote unvalidated 1"] = run("models", "promote", "churn", "1")
    steps["validate 1"] = run("models", "validate", "churn", "1", "--min", "accuracy=0.6", "--max-latency-ms", "500")
    steps["promote 1"] = run("models", "promote", "churn", "1")
    steps["train 2"] = run(*train)
    return repository, auth_db, steps


def test_csv_to_a_served_validated_model_with_the_cli_alone(trained, tmp_path):
    repository, auth_db, steps = trained
    first = steps["train 1"]
    assert first.returncode == 0, first.stderr
    assert "registered churn version 1" in first.stdout
    assert "deployment copy:" in first.stdout and " MB -> " in first.stdout
    assert "AutoGluon" in first.stdout + first.stderr, "AutoGluon's own progress is shown"
    version = ModelRepository(repository).get("churn", "1")
    manifest = version.manifest()
    assert manifest["reference"]["scores"] and manifest["reference"]["feature_importance"]
    assert (version.path / "holdout.csv").is_file()

    # The first trained version goes through the gate like every later one: not served until promoted.
    assert steps["active after train 1"] is None
    assert "not served yet (active version of churn: none); next: agserve models validate churn 1" in first.stdout
    refused = steps["promote unvalidated 1"]
    assert refused.returncode == 1 and "churn version 1 has not been validated" in refused.stderr
    validated = steps["validate 1"]
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "churn version 1: validation PASSED" in validated.stdout
    assert json.loads((version.path / "validation.json").read_text())["passed"] is True
    promoted = steps["promote 1"]
    assert promoted.returncode == 0 and "churn: active version 1 (was none)" in promoted.stdout

    import pandas as pd
    from autogluon.tabular import TabularPredictor

    holdout = pd.read_csv(version.path / "holdout.csv")
    predictor = TabularPredictor.load(str(version.predictor_path), verbosity=0)
    with gunicorn(repository, workers=2, auth_db=auth_db) as server:
        body = server.session().post(f"{server.base}/models/churn/predict",
                                     json={"data": to_records(holdout[FEATURES])}, timeout=30).json()
    assert body["model_info"]["version"] == "1"
    assert body["predictions"] == expected_answers(predictor, holdout[FEATURES])[0]


def test_training_registers_later_versions_without_activating_them(trained):
    repository, auth_db, steps = trained
    second = steps["train 2"]
    assert second.returncode == 0 and "registered churn version 2" in second.stdout
    assert served_repository(repository, auth_db).active_version("churn") == "1"


def test_default_hyperparameters_only_name_installed_model_families():
    families = set(installed_hyperparameters())
    assert "GBM" in families and {"RF", "XT"} <= families
    assert not families & {"CAT", "XGB", "FASTAI", "NN_TORCH"}  # not installed here


@pytest.fixture()
def fresh(trained, tmp_path):
    """A private copy of the trained repository and its database (which holds the activation), free to tamper with."""
    repository, auth_db, _ = trained
    shutil.copytree(repository, tmp_path / "models")
    shutil.copy(auth_db, tmp_path / "auth.sqlite3")
    return tmp_path / "models", tmp_path / "auth.sqlite3"


def _rewrite(version, relative, content):
    (version.predictor_path / relative).write_text(content)
    manifest = version.manifest()
    manifest["files"][relative] = file_checksums(version.predictor_path)[relative]
    (version.path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", ["tampered", "other autogluon", "score", "latency"])
def test_the_gate_refuses_with_its_own_message(fresh, case):
    repository, auth_db = fresh
    version = ModelRepository(repository).get("churn", "2")
    args = ["models", "validate", "churn", "2"]
    if case == "tampered":
        with open(version.predictor_path / "learner.pkl", "ab") as handle:
            handle.write(b"\0")
        expected = "failed its integrity check (changed: learner.pkl)"
    elif case == "other autogluon":
        _rewrite(version, "version.txt", "1.5.0")
        expected = "saved with autogluon.tabular 1.5.0 but"
    elif case == "score":
        args += ["--min", "accuracy=0.9999"]
        expected = "score accuracy"
    else:
        args += ["--max-latency-ms", "0.001"]
        expected = "single-row latency p50 ms"
    result = agserve(*args, repository=repository, auth_db=auth_db)
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if "FAIL" in line.split()[:6]]
    assert len(failing) == 1 and expected in failing[0], result.stdout
    assert "churn version 2: validation FAILED" in result.stdout
    promote = agserve("models", "promote", "churn", "2", repository=repository, auth_db=auth_db)
    assert promote.returncode == 1 and "failed validation" in promote.stderr


def test_promote_refuses_an_unvalidated_version_unless_forced_and_audited(fresh):
    repository, auth_db = fresh
    refused = agserve("models", "promote", "churn", "2", repository=repository, auth_db=auth_db)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("agserve: churn version 2 has not been validated "
                                      "(agserve models validate churn 2 --data HOLDOUT.csv)")
    assert served_repository(repository, auth_db).active_version("churn") == "1"

    forced = agserve("models", "promote", "churn", "2", "--force", repository=repository, auth_db=auth_db)
    assert forced.returncode == 0 and "[forced, audited]" in forced.stdout
    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    entry = KeyStore(sqlite_file(auth_db)).audit_log(1)[0]
    assert entry["action"] == "model.promote" and entry["detail"]["forced"] is True


def test_validate_then_promote_then_rollback(fresh):
    repository, auth_db = fresh
    assert agserve("models", "validate", "churn", "2", repository=repository, auth_db=auth_db).returncode == 0
    promoted = agserve("models", "promote", "churn", "2", repository=repository, auth_db=auth_db)
    assert promoted.returncode == 0 and "active version 2 (was 1)" in promoted.stdout
    rolled = agserve("models", "rollback", "churn", repository=repository, auth_db=auth_db)
    assert rolled.returncode == 0 and "active version 1 (was 2)" in rolled.stdout
    again = agserve("models", "rollback", "churn", repository=repository, auth_db=auth_db)
    assert again.returncode == 1 and "no earlier version" in again.stderr


def test_a_version_changed_after_validation_cannot_be_promoted(fresh):
    repository, auth_db = fresh
    assert agserve("models", "validate", "churn", "2", repository=repository, auth_db=auth_db).returncode == 0
    version = ModelRepository(repository).get("churn", "2")
    with open(version.predictor_path / "predictor.pkl", "ab") as handle:
        handle.write(b"\0")
    refused = agserve("models", "promote", "churn", "2", repository=repository, auth_db=auth_db)
    assert refused.returncode == 1 and "failed its integrity check (changed: predictor.pkl)" in refused.stderr


def test_policy_file_thresholds_apply(fresh):
    repository, auth_db = fresh
    (repository / "churn" / "policy.json").write_text(json.dumps({"min": {"accuracy": 0.9999}}))
    result = agserve("models", "validate", "churn", "2", repository=repository, auth_db=auth_db)
    assert result.returncode == 1 and "score accuracy" in result.stdout


def test_admin_api_lists_versions_with_their_validation(fresh):
    repository, auth_db = fresh
    (repository / "churn" / "1" / "validation.json").unlink(missing_ok=True)
    assert agserve("models", "validate", "churn", "2", repository=repository, auth_db=auth_db).returncode == 0
    from tests.support.apps import build_app, client_with_key

    client = client_with_key(build_app(auth_db, MODEL_REPOSITORY=str(repository), RELOAD_INTERVAL=0))
    body = client.get("/admin/models/churn/versions").get_json()
    assert body["active"] == "1" and body["serving"]["version"] == "1"
    assert [(v["version"], v["active"], v["validation"] and v["validation"]["passed"]) for v in body["versions"]] \
        == [("1", True, None), ("2", False, True)]
    refused = client.post("/admin/models/churn/promote", json={"version": "1"})
    assert refused.status_code == 409 and "has not been validated" in refused.get_json()["error"]
    assert client.post("/admin/models/churn/promote", json={"version": "2"}).get_json()["active"] == "2"
    assert client.post("/admin/models/churn/rollback").get_json() == {"name": "churn", "active": "1",
                                                                       "previous": "2"}
    assert client.post("/admin/models/nope/rollback").status_code == 404
    assert client.get("/admin/models/nope/versions").status_code == 404
    assert client.post("/admin/models/churn/promote", json={"version": "9"}).status_code == 404
