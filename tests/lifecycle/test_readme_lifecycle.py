"""The "From a CSV to production" commands of docs/lifecycle.md (moved there from the README), taken from the page
and run as written on a fresh name, so the documented lifecycle cannot drift from what works."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd

from app.inference import ModelRepository
from tests.support.answers import expected_answers
from tests.support.apps import build_app, client_with_key
from tests.support.data import to_records
from tests.support.servers import ROOT, server_env


def readme_lifecycle_commands() -> list[str]:
    """The lines of the first bash block after docs/lifecycle.md's "From a CSV to production" heading."""
    readme = (ROOT / "docs" / "lifecycle.md").read_text()
    section = readme.split("\n## From a CSV to production\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def churn_csv(path) -> pd.DataFrame:
    """A small churn table with a clear rule, so the documented accuracy threshold holds."""
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame({"tenure": rng.integers(1, 72, n), "contract": rng.choice(["monthly", "yearly"], n),
                          "monthly_charges": rng.uniform(20, 120, n).round(2)})
    frame["churned"] = np.where((frame["tenure"] < 18) & (frame["contract"] == "monthly"), "yes", "no")
    frame.to_csv(path, index=False)
    return frame


def test_the_readme_lifecycle_runs_as_written_on_a_fresh_name(tmp_path):
    commands = readme_lifecycle_commands()
    assert [c.split()[:3] for c in commands][:3] == [[".venv/bin/agserve", "models", "train"],
                                                     [".venv/bin/agserve", "models", "validate"],
                                                     [".venv/bin/agserve", "models", "promote"]]
    os.symlink(sys.prefix, tmp_path / ".venv")  # the page's .venv/bin/agserve, from a checkout
    frame = churn_csv(tmp_path / "churn.csv")
    repository, auth_db = tmp_path / "models", tmp_path / "auth.sqlite3"
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository), AGSERVE_AUTH_DB=str(auth_db))
    from app.db import sqlite_file
    from app.inference.activations import DatabaseActivations

    models = ModelRepository(repository, DatabaseActivations(sqlite_file(auth_db), repository))  # as the CLI keeps it

    actives = []
    for command in commands:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        actives.append(models.active_version("churn"))
    # train: nothing serves; validate 1: still nothing; promote 1: 1; train 2, validate 2: 1; promote 2: 2;
    # rollback: 1.
    assert actives == [None, None, "1", "1", "1", "2", "1"]

    from autogluon.tabular import TabularPredictor

    app = build_app(auth_db, MODEL_REPOSITORY=str(repository), RELOAD_INTERVAL=0)
    rows = frame.drop(columns="churned").head(20)
    body = client_with_key(app).post("/models/churn/predict", json={"data": to_records(rows)}).get_json()
    predictor = TabularPredictor.load(str(models.get("churn", "1").predictor_path), verbosity=0)
    assert body["model_info"]["version"] == "1"
    assert body["predictions"] == expected_answers(predictor, rows)[0]
