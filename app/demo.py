"""The demo model: iris species from the data set bundled with scikit-learn (no download)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DEMO_NAME = "iris"
LABEL = "species"


def demo_data() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame[LABEL] = bunch.target.map(dict(enumerate(bunch.target_names)))
    return frame


def train_demo(workdir: Path) -> tuple[Path, pd.DataFrame]:
    """Train a small random forest (clear probabilities on 120 rows); return its directory and the held-out rows for the manifest."""
    from autogluon.tabular import TabularPredictor

    frame = demo_data().sample(frac=1.0, random_state=0).reset_index(drop=True)
    holdout = frame.groupby(LABEL, group_keys=False).head(10)
    train = frame.drop(index=holdout.index)
    path = workdir / "iris-predictor"
    TabularPredictor(label=LABEL, path=str(path), verbosity=1).fit(
        train, hyperparameters={"RF": {"n_estimators": 100}}, num_cpus=1, fit_weighted_ensemble=False)
    return path, holdout.reset_index(drop=True)
