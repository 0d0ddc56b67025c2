"""In production, what anyone may call (health, V2 health, /openapi.json, /docs, any 404) names no model, feature,
category, bound or load error, and shows no path; a credential with the model_info scope sees them all."""
from __future__ import annotations

import re
import secrets
import shutil

import pytest

from app.db import sqlite_file
from app.auth import ACCESS
from app.auth.keys import KeyStore
from app.inference import ModelRepository
from tests.support.apps import build_app
from tests.support.data import FEATURES

PEPPER = secrets.token_urlsafe(32)
NAMES = ("binary", "tampered")  # served: one ready, one refused at load (its files changed)


@pytest.fixture(scope="module")
def production(repository_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    repository = root / "repository"
    shutil.copytree(repository_path / "binary", repository / "binary")
    shutil.copytree(repository_path / "binary", repository / "tampered")
    with open(repository / "tampered" / "1" / "predictor" / "learner.pkl", "ab") as handle:
        handle.write(b"tampered")
    ModelRepository(repository).set_default_model("binary")
    key, _ = KeyStore(sqlite_file(root / "auth.db"), PEPPER).create("ops", ["model_info"])
    app = build_app(root / "auth.db", ENV="production", KEY_PEPPER=PEPPER, MODEL_REPOSITORY=str(repository),
                    PREDICTION_LOG_DIR="", RELOAD_INTERVAL=0)
    return app, key, repository


def secrets_of(repository) -> list[str]:
    """What an anonymous caller must not read: feature names and categories as JSON strings, model names, the load
    error, paths."""
    categories = ["red", "green", "blue", "black"]
    return ([f'"{n}"' for n in FEATURES + categories + list(NAMES)]
            + ["learner.pkl", "integrity", str(repository), "/tmp/", "Traceback"])


def public_calls(app) -> list[str]:
    """Every public route with each of its path parameters filled with served, refused and unknown values, and
    unknown routes (404s)."""
    values = {"name": [*NAMES, "nosuch"], "version": ["1", "9"], "filename": ["index.css", "../../etc/passwd"]}
    paths = {"/no/such/route", "/models/nosuch", "/v2/models/nosuch", "/openapi.json/x"}
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], ACCESS, None) != "public":
            continue
        variants = [rule.rule]
        for argument in rule.arguments:
            variants = [re.sub(rf"<(?:[^:<>]+:)?{argument}>", value, v) for v in variants for value in values[argument]]
        paths.update(variants)
    return sorted(paths)


def test_anonymous_callers_learn_nothing_that_needs_a_scope(production):
    app, _, repository = production
    client = app.test_client()
    calls = public_calls(app)
    assert {"/health", "/health/ready", "/openapi.json", "/docs", "/v2/models/tampered/ready"} <= set(calls)
    forbidden = secrets_of(repository)
    statuses = {}
    for path in calls:
        for method in ("GET", "POST"):
            answer = client.open(path, method=method)
            statuses[(method, path)] = answer.status_code
            assert answer.status_code < 500 or answer.status_code == 503, (method, path)
            if path.startswith("/docs/static/") and answer.status_code == 200:
                continue  # Swagger UI's own files, the same for every server
            text = answer.get_data(as_text=True).replace('"format":"binary"', "")  # OpenAPI's octet-stream schema
            leaked = [word for word in forbidden if word in text and word.strip('"') not in path.split("/")]  # echoes
            assert not leaked, f"{method} {path} ({answer.status_code}) shows {leaked}: {text[:300]}"
    # The answers are still useful: not ready (one model failed), with a reason that counts instead of naming.
    assert statuses[("GET", "/health/ready")] == 503 and statuses[("GET", "/health/live")] == 200
    assert client.get("/health/ready").get_json()["reason"].startswith("1 of 2 served models not ready")
    assert statuses[("GET", "/v2/models/binary/ready")] == 200 and statuses[("GET", "/no/such/route")] == 404
    document = client.get("/openapi.json").get_json()
    assert "/models/{name}/predict" in document["paths"] and not [c for c in document["components"]["schemas"]
                                                                  if c.startswith("Row")]


def test_a_model_info_credential_sees_the_details(production):
    app, key, repository = production
    client = app.test_client()
    headers = {"X-API-Key": key}
    document = client.get("/openapi.json", headers=headers).get_json()
    assert set(document["components"]["schemas"]["Rowbinary"]["properties"]) == set(FEATURES)
    ready = client.get("/health/ready", headers=headers).get_json()
    assert set(ready["models"]) == set(NAMES) and "learner.pkl" in ready["reason"]
    assert client.get("/health", headers=headers).get_json()["model_info"]["name"] == "binary"
    # A wrong credential on a public route is not an error: it just gets the public answer.
    assert "models" not in client.get("/health/ready", headers={"X-API-Key": "agk_bad_bad"}).get_json()


def test_development_stays_open(app):
    client = app.test_client()
    assert "models" in client.get("/health/ready").get_json()
    assert [c for c in client.get("/openapi.json").get_json()["components"]["schemas"] if c.startswith("Row")]
