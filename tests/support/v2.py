"""Rows as Open Inference Protocol (V2) tensors, as a V2 client would hold and send them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tests.support.data import FEATURES

DATATYPES = {"num": "FP64", "cnt": "INT64", "color": "BYTES", "flag": "BOOL", "when": "BYTES", "note": "BYTES"}


def tensors(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each feature as the numpy array a V2 client would hold: NaN for a missing number, "" for missing text."""
    out = {}
    for name in FEATURES:
        column = rows[name]
        if name == "num":
            out[name] = column.to_numpy(dtype=np.float64)
        elif name == "cnt":
            out[name] = column.to_numpy(dtype=np.int64)
        elif name == "flag":
            out[name] = column.to_numpy(dtype=bool)
        elif name == "when":
            out[name] = np.array(["" if pd.isna(v) else v.isoformat() for v in column], dtype=object)
        else:
            out[name] = np.array(["" if v is None or v != v else v for v in column], dtype=object)
    return out


def v2_body(rows, **extra):
    return {"inputs": [{"name": n, "shape": [len(a)], "datatype": DATATYPES[n], "data": a.tolist()}
                       for n, a in tensors(rows).items()], **extra}
