"""Converting between DataFrames and the JSON rows clients send."""
from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd


def json_value(value: Any) -> Any:
    """A value as a JSON client would send it: None for missing, ISO text for timestamps, plain Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of frame as JSON-ready dicts."""
    columns = list(frame.columns)
    return [{c: json_value(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False, name=None)]
