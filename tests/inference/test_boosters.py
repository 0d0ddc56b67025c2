"""LightGBM boosters given a few rows as a matrix (app/inference/boosters.py): the matrix lightgbm makes of them."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from lightgbm.basic import _data_from_pandas

from app.inference.boosters import FEW_ROWS, lightgbm_matrix

NUMERIC = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
           "bool"]


@st.composite
def frames(draw):
    """A frame of numeric, boolean and categorical columns (categories unseen in training among them), consolidated
    or a block per column, and the categories a booster was trained with (now and then other than the frame's)."""
    n = draw(st.integers(1, FEW_ROWS + 2))
    data, trained = {}, []
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(NUMERIC + ["category"] * 4))
        if kind == "category":
            categories = list(range(draw(st.sampled_from([1, 3, 130]))))  # 130: int16 codes
            values = draw(st.lists(st.sampled_from(categories + [-7, None]), min_size=n, max_size=n))
            data[f"c{i}"] = pd.Categorical(values, categories=categories)
            trained.append(categories if draw(st.integers(0, 9)) else categories[::-1])
        else:
            data[f"c{i}"] = draw(hnp.arrays(np.dtype(kind), n))
    return pd.DataFrame(data, copy=draw(st.booleans())), trained


@settings(max_examples=400, deadline=None, derandomize=True)
@given(frames())
def test_a_few_rows_make_lightgbm_s_matrix(case):
    """Every numeric dtype, booleans, NaN and infinities, categories with unseen values (-1 → NaN), int16 codes, one
    block per dtype or per column: the same dtype and bytes as lightgbm's own conversion; other categories than
    training's, or more rows, are left to lightgbm."""
    frame, trained = case
    ours = lightgbm_matrix(frame, trained)
    expected = _data_from_pandas(frame, "auto", "auto", trained)[0]
    recoded = any(list(frame[c].cat.categories) != t for c, t in
                  zip([c for c in frame if isinstance(frame[c].dtype, pd.CategoricalDtype)], trained))
    if len(frame) > FEW_ROWS or recoded:
        assert ours is None
        return
    assert ours is not None
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert ours.flags.f_contiguous == expected.flags.f_contiguous
    assert ours.tobytes(order="A") == expected.tobytes(order="A")


def test_dtypes_lightgbm_refuses_or_converts_otherwise_are_left_to_it():
    """Objects, datetimes and nullable integers: no matrix (lightgbm raises, or fills NA its own way)."""
    for column in (np.array(["a"], dtype=object), np.array(["2024-01-01"], dtype="datetime64[ns]"),
                   pd.array([1], dtype="Int64")):
        assert lightgbm_matrix(pd.DataFrame({"x": [1.0], "y": column}), []) is None
