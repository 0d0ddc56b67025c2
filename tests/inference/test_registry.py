"""ModelRegistry.refresh without HTTP: a newly activated version is loaded beside the serving one and swapped in;
a version that cannot load leaves the serving one in place, says why, and is not retried until another is activated."""
from __future__ import annotations

import shutil

import pytest

from app.config import load_settings
from app.inference import ModelRegistry, ModelRepository, loading
from tests.support.data import FEATURES, to_records


@pytest.fixture()
def repository(repository_path, tmp_path):
    """A private copy whose "binary" has versions 2 (a copy of 1) and 3 (a changed file: fails its check)."""
    root = tmp_path / "models"
    shutil.copytree(repository_path, root)
    for version in ("2", "3"):
        shutil.copytree(root / "binary" / "1", root / "binary" / version)
    (root / "binary" / "3" / "predictor" / "predictor.pkl").write_bytes(b"changed after import")
    return ModelRepository(root)


@pytest.fixture()
def settings():
    return load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": True})


@pytest.fixture()
def loads(monkeypatch):
    """The versions loading.load was asked for, in order."""
    asked = []
    real = loading.load

    def counting(version, settings):
        asked.append(version.version)
        return real(version, settings)

    monkeypatch.setattr(loading, "load", counting)
    return asked


def test_a_new_activation_is_loaded_beside_and_swapped_in(repository, settings, loads, dataset, in_process):
    registry = ModelRegistry(repository, names=("binary",))
    registry.refresh(settings)
    first = registry.get("binary")
    assert (first.version, loads) == ("1", ["1"])
    registry.refresh(settings)  # nothing newly activated: nothing loaded again
    assert loads == ["1"] and registry.get("binary") is first

    repository.activate("binary", "2")
    registry.refresh(settings)
    second = registry.get("binary")
    assert (second.version, loads) == ("2", ["1", "2"]) and registry.get("binary", "2") is second
    assert second.cache_namespace != first.cache_namespace  # answers cached for version 1 are never served for 2
    assert first.batcher._closed and not second.batcher._closed  # the replaced version stops batching
    _, test = dataset
    rows = test[FEATURES].iloc[:5]
    assert second.predict(to_records(rows)).predictions == in_process["binary"].predict(rows).tolist()


def test_a_version_that_cannot_load_leaves_the_serving_one_and_is_not_retried(repository, settings, loads):
    registry = ModelRegistry(repository, names=("binary",))
    registry.refresh(settings)
    serving = registry.get("binary")

    repository.activate("binary", "3")
    registry.refresh(settings)
    registry.refresh(settings)  # the watcher's next turn: the same failed version is not loaded again
    assert loads == ["1", "3"] and registry.get("binary") is serving and registry.ready
    status = registry.status()["binary"]
    assert status["status"] == "ready" and status["version"] == "1" and status["failed_version"] == "3"
    assert status["error"].startswith("version 3 failed to load, still serving 1: ")
    assert "integrity check" in status["error"]

    repository.activate("binary", "2")  # another activation: loaded, and the failure is forgotten
    registry.refresh(settings)
    assert registry.get("binary").version == "2" and loads == ["1", "3", "2"]
    assert registry.status()["binary"]["failed_version"] is None and registry.status()["binary"]["error"] is None


def test_a_first_load_that_fails_is_not_ready_and_says_why(repository, settings):
    repository.activate("binary", "3")
    registry = ModelRegistry(repository, names=("binary",))
    registry.refresh(settings)
    assert not registry.ready and "binary: " in registry.not_ready_reason()
    assert "integrity check" in registry.not_ready_reason()
    assert registry.status()["binary"]["status"] == "failed"
