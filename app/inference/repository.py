"""The model repository on disk: models/<name>/<version>/{predictor/, manifest.json, schema.json}.

Versions are immutable once imported (a serving fleet mounts the folder read-only). Which one is active, the ones
before it (for rollback), and the default model (the one `POST /predict` answers with, fixed when the repository gets
its first model) are kept by the repository's activations: the database for the server and the CLI,
models/<name>/state.json and models/default.json when no database is attached (see app.inference.activations).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from app.config import MODEL_NAME
from app.inference.activations import StateFileActivations
from app.inference.errors import ModelNotFound, RepositoryError
from app.inference.manifest import (MANIFEST_FILE, build_manifest, installed_versions, read_manifest,
                                    saved_versions, write_manifest)

PREDICTOR_DIR = "predictor"
BOUNDS_FILE = "schema.json"


@dataclass(frozen=True)
class ModelVersion:
    """One imported version of a model; nothing here unpickles anything."""

    name: str
    version: str
    path: Path

    @property
    def predictor_path(self) -> Path:
        return self.path / PREDICTOR_DIR

    @property
    def bounds_path(self) -> Path:
        return self.path / BOUNDS_FILE

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)


class ModelRepository:
    """Named models, each with numbered versions and one active version."""

    def __init__(self, root: str | os.PathLike, activations=None):
        self.root = Path(root)
        self.activations = activations if activations is not None else StateFileActivations(self.root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[str]:
        folder = self._model_dir(name)
        found = [p.name for p in folder.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()] if folder.is_dir() else []
        return sorted(found, key=_version_key)

    def active_version(self, name: str) -> str | None:
        return self._state(name).get("active")

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A version (the active one when version is None); ModelNotFound when there is none."""
        version = version or self.active_version(name)
        if version is None or version not in self.versions(name):
            what = f"model {name!r} version {version!r}" if version else f"model {name!r}"
            raise ModelNotFound(f"{what} is not in the repository")
        return ModelVersion(name, version, self._model_dir(name) / version)

    def import_predictor(self, source: str | os.PathLike, name: str, version: str | None = None,
                         reference: pd.DataFrame | None = None) -> ModelVersion:
        """Copy a saved TabularPredictor in and write its manifest; nothing is activated (that is promote's job,
        behind the gate). The repository's first model becomes its default model."""
        from autogluon.tabular import TabularPredictor

        source = Path(source)
        if not MODEL_NAME.fullmatch(name):
            raise RepositoryError(f"{name!r} is not a valid model name (letters, digits, '.', '_', '-')")
        if not (source / "predictor.pkl").is_file():
            raise RepositoryError(f"{source} is not a saved AutoGluon TabularPredictor (no predictor.pkl)")
        mismatch = version_mismatch(saved_versions(source), installed_versions())
        if mismatch:
            raise RepositoryError(f"cannot import {source}: {mismatch}")
        version = version or self._next_version(name)
        if not MODEL_NAME.fullmatch(version):
            raise RepositoryError(f"{version!r} is not a valid version")
        target = self._model_dir(name) / version
        if target.exists():
            raise RepositoryError(f"model {name!r} already has a version {version!r}")

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        try:
            shutil.copytree(source, staging / PREDICTOR_DIR)
            predictor = TabularPredictor.load(str(staging / PREDICTOR_DIR), verbosity=0)
            manifest = build_manifest(predictor, staging / PREDICTOR_DIR, name=name, version=version,
                                      reference=reference)
            if reference is not None and len(reference):
                manifest["background"] = _background(predictor, manifest, staging, reference)
            write_manifest(staging, manifest)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.default_model() is None and self.names() == [name]:
            self.set_default_model(name)
        return ModelVersion(name, version, target)

    def set_background(self, name: str, version: str, reference: pd.DataFrame) -> dict[str, Any]:
        """Choose and store the explanation background of an imported version from reference data."""
        from autogluon.tabular import TabularPredictor

        imported = self.get(name, version)
        manifest = imported.manifest()
        predictor = TabularPredictor.load(str(imported.predictor_path), verbosity=0)
        manifest["background"] = _background(predictor, manifest, imported.path, reference)
        write_manifest(imported.path, manifest)
        return manifest["background"]

    def default_model(self) -> str | None:
        """The model `POST /predict` answers with: recorded once, changed only by set_default_model."""
        return self.activations.default_model()

    def set_default_model(self, name: str) -> None:
        self.require(name)
        self.activations.set_default_model(name)

    def activate(self, name: str, version: str) -> None:
        """Make version the active one, remembering the previous for rollback."""
        self.get(name, version)
        self.activations.activate(name, version)

    def activation(self, name: str) -> str:
        """Changes with every activation (promote, rollback); caches key on it."""
        return str(self._state(name).get("activation", ""))

    def require(self, name: str) -> None:
        """ModelNotFound unless the repository has at least one version of name."""
        if not self.versions(name):
            raise ModelNotFound(f"model {name!r} is not in the repository")

    def rollback(self, name: str) -> str | None:
        """Re-activate the version active before the current one; None when there is none."""
        self.require(name)
        history = self.history(name)
        if not history:
            return None
        self.get(name, history[-1])
        return self.activations.rollback(name)

    def history(self, name: str) -> list[str]:
        return list(self._state(name).get("history", []))

    def _model_dir(self, name: str) -> Path:
        if not MODEL_NAME.fullmatch(name):
            raise ModelNotFound(f"model {name!r} is not in the repository")
        return self.root / name

    def _state(self, name: str) -> dict[str, Any]:
        self._model_dir(name)  # the name is checked before it reaches a path or a query
        return self.activations.state(name)

    def _next_version(self, name: str) -> str:
        numbers = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numbers, default=0) + 1)


def _background(predictor, manifest: dict[str, Any], version_dir: Path, reference: pd.DataFrame) -> dict[str, Any]:
    from app.inference.explain import sample_background, write_background

    names = [f["name"] for f in manifest["features"]]
    missing = [n for n in names if n not in reference.columns]
    if missing:
        raise RepositoryError(f"reference data lacks the features {', '.join(missing)}")
    return write_background(version_dir, sample_background(reference, names, predictor.label, predictor.problem_type))


def version_mismatch(saved: dict[str, str], installed: dict[str, str]) -> str:
    """A sentence naming what differs between saved and installed versions, or '' if nothing does."""
    problems = []
    if saved["autogluon"] != installed["autogluon"]:
        problems.append(f"saved with autogluon.tabular {saved['autogluon']} but {installed['autogluon']} is installed")
    if saved["python"] != installed["python"]:
        problems.append(f"saved with Python {saved['python']} but this is Python {installed['python']}")
    return "; ".join(problems)


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
