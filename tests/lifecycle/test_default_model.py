"""Adding a model never moves `POST /predict`: a second model whose name sorts first is trained, validated and
promoted beside a running server, and /predict, /model/info and /health answer exactly as before. Only an explicit
`agserve models default NAME` moves it."""
from __future__ import annotations

import json
import shutil

from app.config import load_settings
from app.inference import ModelRepository
from app.lifecycle.training import train
from app.lifecycle.validation import validate
from app.lifecycle.versions import promote
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.commands import agserve
from tests.support.servers import eventually, gunicorn


def seen_by_default_routes(session, base, body):
    """What a caller of the default routes sees, without the per-request id and time."""
    answer = session.post(f"{base}/predict", json=body, timeout=30).json()
    health = session.get(f"{base}/health", timeout=10)
    return {"predict": {k: answer[k] for k in ("predictions", "probabilities", "model_info")},
            "model_info": session.get(f"{base}/model/info", timeout=10).json(),
            "health": (health.status_code, health.json()["status"], health.json()["model_info"])}


def test_a_new_model_whose_name_sorts_first_changes_nothing_on_the_default_routes(repository_path, tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(repository_path, repository)
    models = ModelRepository(repository)
    assert models.default_model() == "binary"  # the repository's first model, recorded at its import
    body = {"data": to_records(mixed_frame(n=3, seed=42)[FEATURES])}

    with gunicorn(repository, workers=1, AGSERVE_RELOAD_INTERVAL="0.5") as server:
        session = server.session()
        before = seen_by_default_routes(session, server.base, body)
        assert before["predict"]["model_info"]["name"] == "binary" and before["health"][0] == 200

        # "aardvark" sorts before every served model, and goes all the way: trained, validated, promoted.
        data = mixed_frame(n=200, seed=5)[FEATURES + ["y_multiclass"]]
        result = train(models, data, label="y_multiclass", name="aardvark", presets=("medium_quality",),
                       hyperparameters={"GBM": {"num_boost_round": 10}}, verbosity=0, report=lambda _: None)
        settings = load_settings(environ={}, overrides={"ENV": "testing"})
        assert validate(result.version, data, settings).passed
        promote(models, "aardvark", result.version.version)
        assert eventually(lambda: (session.get(f"{server.base}/models", timeout=10).json()["models"]
                                   .get("aardvark", {}).get("status")) == "ready", timeout=60)

        assert seen_by_default_routes(session, server.base, body) == before
        listed = agserve("models", "list", repository=repository, auth_db=server.auth_db)
        assert "default model (POST /predict): binary" in listed.stdout
        assert [row["name"] for row in json.loads(agserve("models", "list", "--json", repository=repository,
                                                          auth_db=server.auth_db).stdout) if row["default"]] \
            == ["binary"]

        # Only an explicit command moves the default; servers follow within seconds.
        moved = agserve("models", "default", "aardvark", repository=repository, auth_db=server.auth_db)
        assert moved.returncode == 0 and "default model: aardvark (was binary)" in moved.stdout
        assert eventually(lambda: session.post(f"{server.base}/predict", json=body, timeout=30)
                          .json()["model_info"]["name"] == "aardvark", timeout=30)
        assert session.get(f"{server.base}/model/info", timeout=10).json()["name"] == "aardvark"
