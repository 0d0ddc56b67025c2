"""The first version rule for `models import`: registered, not served, until it passes validate and is promoted.
(The same rule for `models train` is shown in test_pipeline.py and test_readme_lifecycle.py.)"""
from __future__ import annotations

from app.inference import ModelRepository
from tests.support.answers import expected_answers
from tests.support.apps import PROBLEMS, build_app, client_with_key
from tests.support.data import FEATURES, to_records
from tests.support.commands import agserve


def test_an_imported_first_version_serves_only_after_validate_and_promote(predictor_dirs, in_process, dataset,
                                                                          tmp_path):
    repository, auth_db = tmp_path / "models", tmp_path / "auth.sqlite3"
    labelled = tmp_path / "labelled.csv"
    _, test = dataset
    test[FEATURES + [PROBLEMS["binary"][0]]].to_csv(labelled, index=False)

    def run(*args):
        return agserve(*args, repository=repository, auth_db=auth_db)

    imported = run("models", "import", str(predictor_dirs["binary"]), "--name", "fresh")
    assert imported.returncode == 0, imported.stderr
    assert ("not served yet (active version of fresh: none); next: agserve models validate fresh 1 "
            "--data LABELLED.csv && agserve models promote fresh 1") in imported.stdout
    from app.db import sqlite_file
    from app.inference.activations import DatabaseActivations
    assert ModelRepository(repository, DatabaseActivations(sqlite_file(auth_db), repository)).active_version("fresh") is None
    app = build_app(auth_db, MODEL_REPOSITORY=str(repository), RELOAD_INTERVAL=0)
    client = client_with_key(app)
    rows = {"data": to_records(test[FEATURES].head(5))}
    assert client.post("/models/fresh/predict", json=rows).status_code == 404
    assert client.get("/health/ready").status_code == 503  # nothing is served yet

    refused = run("models", "promote", "fresh", "1")
    assert refused.returncode == 1 and "fresh version 1 has not been validated" in refused.stderr
    assert run("models", "validate", "fresh", "1", "--data", str(labelled)).returncode == 0
    assert run("models", "promote", "fresh", "1").returncode == 0

    app.extensions["agserve.models"].refresh(app.config)  # what each worker's watcher does every few seconds
    body = client.post("/models/fresh/predict", json=rows).get_json()
    assert body["model_info"]["version"] == "1"
    assert body["predictions"] == expected_answers(in_process["binary"], test[FEATURES].head(5))[0]
    assert client.get("/health/ready").status_code == 200
