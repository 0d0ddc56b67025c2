"""Demo data shipped with the package (no download): iris from scikit-learn, and a synthetic mixed-type set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


MIXED_FEATURES = ["num", "cnt", "color", "flag", "when", "note"]
WORDS = ["fast", "slow", "cheap", "premium", "broken", "new", "used", "great", "poor", "shiny"]


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Synthetic rows with every AutoGluon feature kind and missing values, and three kinds of label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "num": rng.normal(size=n),
        "cnt": rng.integers(0, 20, n),
        "color": rng.choice(["red", "green", "blue", "black"], n).astype(object),
        "flag": rng.choice([True, False], n),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 24, n), unit="h"),
        "note": [" ".join(rng.choice(WORDS, 4)) for _ in range(n)],
    })
    frame.loc[rng.random(n) < 0.1, "num"] = np.nan
    frame.loc[rng.random(n) < 0.1, "color"] = None
    frame.loc[rng.random(n) < 0.05, "when"] = pd.NaT
    frame.loc[rng.random(n) < 0.05, "note"] = None
    signal = (frame["num"].fillna(0) + (frame["color"] == "red") * 1.5 + frame["flag"] * 0.5
              + frame["note"].fillna("").str.contains("premium") + frame["cnt"] / 10)
    frame["y_binary"] = np.where(signal + rng.normal(scale=0.5, size=n) > 1.2, "yes", "no")
    frame["y_multiclass"] = pd.cut(signal + rng.normal(scale=0.5, size=n), [-np.inf, 0.5, 1.5, 2.5, np.inf],
                                   labels=["low", "mid", "high", "top"]).astype(str)
    frame["y_regression"] = signal * 3 + rng.normal(scale=0.3, size=n)
    return frame
