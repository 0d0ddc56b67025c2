"""Tiny mixed-type data sets for the tests: every AutoGluon feature kind, with missing values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

FEATURES = ["num", "cnt", "color", "flag", "when", "note"]
WORDS = ["fast", "slow", "cheap", "premium", "broken", "new", "used", "great", "poor", "shiny"]


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
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


def to_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as a JSON client would send them: null for missing, ISO text for datetimes."""
    records = []
    for row in frame.to_dict("records"):
        record = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
                value = None
            elif isinstance(value, pd.Timestamp):
                value = value.isoformat()
            record[key] = value
        records.append(record)
    return records
