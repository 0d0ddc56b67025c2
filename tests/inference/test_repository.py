"""The repository: imports with manifests, active versions, and loading that refuses changed or foreign models."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from app.config import load_settings
from app.inference import ModelLoadError, ModelNotFound, ModelRepository, RepositoryError
from app.inference import loading
from app.inference.manifest import file_checksums, installed_versions
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES


@pytest.fixture()
def repository(tmp_path, repository_path) -> ModelRepository:
    """A private copy of the shared repository, free to tamper with."""
    shutil.copytree(repository_path, tmp_path / "models")
    return ModelRepository(tmp_path / "models")


@pytest.fixture(scope="module")
def settings():
    return load_settings(environ={}, overrides={"ENV": "testing"})


def test_manifest_records_what_the_server_needs(repository_path, in_process):
    repository = ModelRepository(repository_path)
    version = repository.get("multiclass")
    manifest = version.manifest()
    predictor = in_process["multiclass"]

    assert manifest["files"] == file_checksums(version.predictor_path)
    assert {"predictor.pkl", "learner.pkl", "version.txt", "metadata.json"} <= set(manifest["files"])
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    assert manifest["versions"] == installed_versions()
    assert manifest["problem_type"] == "multiclass" and manifest["label"] == "y_multiclass"
    assert manifest["class_labels"] == list(predictor.class_labels)
    assert manifest["eval_metric"] == predictor.eval_metric.name
    assert {f["name"]: f["kind"] for f in manifest["features"]} == {
        "num": "numeric", "cnt": "integer", "color": "category", "flag": "boolean", "when": "datetime", "note": "text"}

    reference = manifest["reference"]
    assert set(reference["statistics"]) == set(FEATURES)
    assert reference["statistics"]["num"]["null_share"] > 0
    assert set(reference["statistics"]["color"]["categories"]) <= {"red", "green", "blue", "black"}
    assert set(reference["sample_row"]) == set(FEATURES)
    assert reference["scores"]["accuracy"] == pytest.approx(
        predictor.evaluate(_reference_rows(repository_path, "multiclass"), silent=True)["accuracy"])
    assert set(reference["feature_importance"]) == set(FEATURES)


def _reference_rows(repository_path, name):
    from tests.support.data import mixed_frame

    frame = mixed_frame().iloc[320:]
    return frame[FEATURES + [PROBLEMS[name][0]]]


def test_imports_never_activate_and_the_first_model_becomes_the_default(predictor_dirs, tmp_path):
    fresh = ModelRepository(tmp_path / "fresh")
    assert fresh.default_model() is None
    fresh.import_predictor(predictor_dirs["binary"], "zeta")
    fresh.import_predictor(predictor_dirs["binary"], "alpha")  # sorts first: changes nothing
    assert (fresh.active_version("zeta"), fresh.active_version("alpha")) == (None, None)
    assert fresh.default_model() == "zeta"
    fresh.set_default_model("alpha")
    assert fresh.default_model() == "alpha"
    with pytest.raises(ModelNotFound):
        fresh.set_default_model("missing")


def test_later_imports_leave_the_active_version_alone(repository, predictor_dirs):
    second = repository.import_predictor(predictor_dirs["binary"], "binary")
    named = repository.import_predictor(predictor_dirs["binary"], "binary", version="canary")

    assert (second.version, named.version) == ("2", "canary")
    assert repository.versions("binary") == ["1", "2", "canary"]
    assert repository.active_version("binary") == "1"
    assert repository.get("binary", "2").manifest()["reference"] is None  # no reference data given
    with pytest.raises(RepositoryError, match="already has a version"):
        repository.import_predictor(predictor_dirs["binary"], "binary", version="2")


@pytest.mark.parametrize("name", ["../escape", "", "a b", ".hidden"])
def test_bad_names_are_refused(repository, predictor_dirs, name):
    with pytest.raises(RepositoryError, match="not a valid model name"):
        repository.import_predictor(predictor_dirs["binary"], name)


def test_a_folder_that_is_not_a_predictor_is_refused(repository, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryError, match="not a saved AutoGluon TabularPredictor"):
        repository.import_predictor(tmp_path / "empty", "empty")
    assert "empty" not in repository.names()


def test_unknown_model_is_not_found(repository):
    with pytest.raises(ModelNotFound):
        repository.get("missing")
    with pytest.raises(ModelNotFound):
        repository.get("binary", "99")


class Bomb:
    """Unpickling this creates a marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_changed_file_is_refused_before_it_is_unpickled(repository, settings, tmp_path):
    marker, control = tmp_path / "unpickled", tmp_path / "control"
    pickle.loads(pickle.dumps(Bomb(control)))
    assert control.exists(), "the bomb must go off when unpickled, or the test proves nothing"

    version = repository.get("binary")
    (version.predictor_path / "predictor.pkl").write_bytes(pickle.dumps(Bomb(marker)))

    with pytest.raises(ModelLoadError) as refused:
        loading.load(version, settings)
    assert "failed its integrity check (changed: predictor.pkl)" in refused.value.message
    assert not marker.exists()


def test_a_change_to_any_one_predictor_file_is_refused(repository, settings):
    """Each file in turn (model weights such as models/<Model>/model.pkl included), so no file can be left out of
    the checksums without a failure here."""
    version = repository.get("multiclass")
    on_disk = sorted(p.relative_to(version.predictor_path).as_posix()
                     for p in version.predictor_path.rglob("*") if p.is_file())
    assert sorted(version.manifest()["files"]) == on_disk
    assert [f for f in on_disk if f.startswith("models/") and f.endswith("/model.pkl")], "no weights to tamper with"
    refusals = {}
    for relative in on_disk:
        path = version.predictor_path / relative
        original = path.read_bytes()
        path.write_bytes(original + b"\0")
        try:
            loading.load(version, settings)
            refusals[relative] = "loaded"
        except ModelLoadError as exc:
            refusals[relative] = exc.message
        finally:
            path.write_bytes(original)
    assert refusals == {relative: f"model multiclass version 1 failed its integrity check (changed: {relative}); "
                                  "refusing to load it" for relative in on_disk}


def test_missing_and_unexpected_files_are_refused(repository, settings):
    version = repository.get("regression")
    os.remove(version.predictor_path / "learner.pkl")
    (version.predictor_path / "models" / "extra.pkl").write_bytes(b"not ours")

    with pytest.raises(ModelLoadError) as refused:
        loading.load(version, settings)
    assert "missing: learner.pkl" in refused.value.message
    assert "unexpected: models/extra.pkl" in refused.value.message


def _rewrite(version, relative: str, content: str) -> None:
    """Change a predictor file and its checksum, as another installation would have written it."""
    path = version.predictor_path / relative
    path.write_text(content)
    manifest = version.manifest()
    manifest["files"][relative] = file_checksums(version.predictor_path)[relative]
    (version.path / "manifest.json").write_text(json.dumps(manifest))


def test_other_autogluon_version_is_refused_with_both_versions_named(repository, settings):
    version = repository.get("binary")
    _rewrite(version, "version.txt", "1.5.0")
    with pytest.raises(ModelLoadError) as refused:
        loading.load(version, settings)
    installed = installed_versions()["autogluon"]
    assert f"saved with autogluon.tabular 1.5.0 but {installed} is installed" in refused.value.message


def test_other_python_version_is_refused_with_both_versions_named(repository, settings):
    version = repository.get("binary")
    metadata = json.loads((version.predictor_path / "metadata.json").read_text())
    metadata["py_version"] = "3.9"
    _rewrite(version, "metadata.json", json.dumps(metadata))
    with pytest.raises(ModelLoadError) as refused:
        loading.load(version, settings)
    assert f"saved with Python 3.9 but this is Python {installed_versions()['python']}" in refused.value.message


def test_import_refuses_a_predictor_from_another_autogluon(repository, predictor_dirs, tmp_path):
    foreign = tmp_path / "foreign"
    shutil.copytree(predictor_dirs["binary"], foreign)
    (foreign / "version.txt").write_text("1.4.0")
    with pytest.raises(RepositoryError, match="saved with autogluon.tabular 1.4.0"):
        repository.import_predictor(foreign, "foreign")
    assert "foreign" not in repository.names()


def test_load_persists_and_warms_up(repository_path, settings):
    model, facts = loading.load(ModelRepository(repository_path).get("multiclass"), settings)
    assert facts["persisted"], "weights should be held in memory"
    assert facts["warmup_ms"] > 0 and facts["load_seconds"] > 0
    assert model.info == {"name": "multiclass", "version": "1", "problem_type": "multiclass",
                          "eval_metric": "accuracy"}
