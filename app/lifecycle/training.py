"""Training a TabularPredictor for deployment, compressing it, and registering it as a new version."""
from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from app.inference.repository import ModelRepository, ModelVersion

DEFAULT_PRESETS = ("medium_quality", "optimize_for_deployment")
HOLDOUT_FILE = "holdout.csv"
# Model families of AutoGluon's default config and the package each needs; absent ones are left out.
FAMILY_PACKAGES = {"GBM": "lightgbm", "CAT": "catboost", "XGB": "xgboost", "FASTAI": "fastai", "NN_TORCH": "torch",
                   "RF": "sklearn", "XT": "sklearn", "KNN": "sklearn", "LR": "sklearn"}


@dataclass
class TrainingResult:
    version: ModelVersion
    size_before: int
    size_after: int
    scores: dict[str, float] | None
    model_best: str


def installed_hyperparameters() -> dict[str, Any]:
    """AutoGluon's default model families, limited to those whose package is installed (no ImportError noise)."""
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config

    config = get_hyperparameter_config("default")
    return {family: spec for family, spec in config.items()
            if importlib.util.find_spec(FAMILY_PACKAGES.get(family, family.lower())) is not None}


def split_holdout(data: pd.DataFrame, label: str, fraction: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A train/holdout split, stratified on the label when every class has at least two rows."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise ValueError("the holdout fraction must be between 0 and 1")
    labelled = data[data[label].notna()]
    counts = labelled[label].value_counts()
    looks_like_classes = len(counts) <= 50 and counts.min() >= 2 and len(counts) <= len(labelled) * fraction
    stratify = labelled[label] if looks_like_classes else None
    train, holdout = train_test_split(labelled, test_size=fraction, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def train(repository: ModelRepository, data: pd.DataFrame, *, label: str, name: str, holdout: float = 0.2,
          time_limit: int | None = None, presets: tuple[str, ...] = DEFAULT_PRESETS, cpus: int | None = None,
          memory_limit_gb: float | None = None, infer_limit_ms: float | None = None,
          hyperparameters: dict[str, Any] | None = None, problem_type: str | None = None,
          eval_metric: str | None = None, verbosity: int = 2,
          report: Callable[[str], None] = print) -> TrainingResult:
    """Fit, compress to a deployment clone, and register it (with the holdout as reference data)."""
    from autogluon.tabular import TabularPredictor

    if label not in data.columns:
        raise ValueError(f"the data has no column {label!r}")
    train_rows, holdout_rows = split_holdout(data, label, holdout)
    report(f"training on {len(train_rows)} rows, holding out {len(holdout_rows)} for validation")
    with tempfile.TemporaryDirectory(prefix="agserve-train-") as workdir:
        fitted_path = Path(workdir) / "fitted"
        fit_options: dict[str, Any] = {
            "presets": list(presets), "time_limit": time_limit,
            "hyperparameters": hyperparameters or installed_hyperparameters(),
        }
        if cpus:
            fit_options["num_cpus"] = cpus
        if memory_limit_gb:
            fit_options["memory_limit"] = memory_limit_gb
        if infer_limit_ms:
            fit_options.update(infer_limit=infer_limit_ms / 1000, infer_limit_batch_size=1)
        predictor = TabularPredictor(label=label, path=str(fitted_path), problem_type=problem_type,
                                     eval_metric=eval_metric, verbosity=verbosity).fit(train_rows, **fit_options)
        size_before = directory_size(fitted_path)
        deploy_path = Path(workdir) / "deploy"
        predictor.clone_for_deployment(str(deploy_path))
        size_after = directory_size(deploy_path)
        report(f"deployment copy: {size_before / 1e6:.1f} MB -> {size_after / 1e6:.1f} MB "
               f"(kept {predictor.model_best} and the models it needs)")
        version = repository.import_predictor(deploy_path, name, reference=holdout_rows)
    holdout_rows.to_csv(version.path / HOLDOUT_FILE, index=False)
    manifest = version.manifest()
    return TrainingResult(version, size_before, size_after, manifest["reference"]["scores"], manifest["model_best"])
