"""Shared fixtures: tiny real predictors of every problem type, a repository holding them, an app."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.support.apps import PROBLEMS, build_app, client_with_key
from tests.support.data import FEATURES, mixed_frame


@pytest.fixture(scope="session")
def dataset():
    frame = mixed_frame()
    return frame.iloc[:320].reset_index(drop=True), frame.iloc[320:].reset_index(drop=True)


@pytest.fixture(scope="session")
def predictor_dirs(tmp_path_factory, dataset) -> dict[str, Path]:
    """Saved TabularPredictor directories, one per problem type, trained on mixed-type data."""
    from autogluon.tabular import TabularPredictor

    train, _ = dataset
    root = tmp_path_factory.mktemp("predictors")
    paths = {}
    for name, (label, problem_type, hyperparameters) in PROBLEMS.items():
        extra = {"quantile_levels": [0.1, 0.5, 0.9]} if problem_type == "quantile" else {}
        TabularPredictor(label=label, problem_type=problem_type, path=str(root / name), verbosity=0, **extra).fit(
            train[FEATURES + [label]], hyperparameters=hyperparameters, num_cpus=1)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="session")
def repository_path(tmp_path_factory, predictor_dirs, dataset) -> Path:
    """A model repository with every problem type imported (reference data: the test split)."""
    from app.inference import ModelRepository

    _, test = dataset
    root = tmp_path_factory.mktemp("repository")
    repository = ModelRepository(root)
    for name, path in predictor_dirs.items():
        label = PROBLEMS[name][0]
        repository.import_predictor(path, name, reference=test[FEATURES + [label]])
        repository.activate(name, "1")  # stands in for validate + promote, which tests/lifecycle goes through
    return root


@pytest.fixture(scope="session")
def in_process(repository_path):
    """AutoGluon's own predictors, loaded in-process from the repository's copies: the reference answers."""
    from autogluon.tabular import TabularPredictor

    from app.inference import ModelRepository

    repository = ModelRepository(repository_path)
    return {name: TabularPredictor.load(str(repository.get(name).predictor_path), verbosity=0) for name in PROBLEMS}


@pytest.fixture(scope="session")
def app(repository_path, tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("auth") / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path),
                     DEFAULT_MODEL="binary")


@pytest.fixture()
def client(app):
    return client_with_key(app)


@pytest.fixture(autouse=True)
def _no_agserve_environment(monkeypatch):
    """Tests see only the settings they pass, never the developer's shell."""
    for key in list(os.environ):
        if key.startswith("AGSERVE_"):
            monkeypatch.delenv(key)


def pytest_configure(config):
    """The property tests' random seed is drawn once, here: xdist workers inherit it, so they collect the same ids."""
    if not hasattr(config, "workerinput"):
        os.environ.setdefault("AGSERVE_PROPERTY_SEED", str(random.SystemRandom().randrange(2 ** 32)))


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two xdist workers with --dist loadfile: a module's tests share a worker, so its module
    fixtures start once; so do tests/fleet's modules, which share one package-scoped fleet."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FleetTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tests/fleet" if nodeid.startswith("tests/fleet/") else super()._split_scope(nodeid)

    return FleetTogether(config, log)
