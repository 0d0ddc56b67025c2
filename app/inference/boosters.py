"""LightGBM boosters given a few rows of a DataFrame as the float matrix lightgbm would make of it: the same answers.

lightgbm turns a DataFrame into its matrix with a shallow copy, an assignment of the categories' codes, a replace of
-1 by NaN and an interleave of the blocks: 0.9 ms for a one-row frame of AutoGluon's mixed-type features, against
0.02 ms for the prediction itself. For up to `FEW_ROWS` rows the same matrix is filled block by block (the same
dtype, the same codes, NaN for a category unseen in training), and anything lightgbm would treat otherwise (other
categories than training's, nullable or refused dtypes, feature-name validation) goes through lightgbm's own path.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from lightgbm import Booster

from app.inference.generators import FEW_ROWS  # the rows the feature pipeline hands over in columns
from app.threads import estimators


def boosters_reading_blocks(predictor) -> list[str]:
    """Give the predictor's in-memory LightGBM boosters the few-rows matrix; return the models changed."""
    changed = []
    for model, booster in estimators(predictor, Booster):
        if type(booster) is Booster and "predict" not in vars(booster) and booster.pandas_categorical is not None:
            booster.predict = partial(_predict, booster, booster.predict)
            changed.append(model.name)
    return changed


def _predict(booster: Booster, predict, data, *args, **kwargs):
    validate = kwargs.get("validate_features", args[6] if len(args) > 6 else False)
    if isinstance(data, pd.DataFrame) and not validate:
        matrix = lightgbm_matrix(data, booster.pandas_categorical)
        if matrix is not None:
            data = matrix
    return predict(data, *args, **kwargs)


def lightgbm_matrix(frame: pd.DataFrame, categories: list[list]) -> np.ndarray | None:
    """What lightgbm's _data_from_pandas makes of a frame of 1 to FEW_ROWS rows for a booster trained with these
    categories, or None where it would do anything else."""
    n = len(frame)
    if not 1 <= n <= FEW_ROWS:
        return None
    parts, coded = [], []
    for block in frame._mgr.blocks:
        positions = block.mgr_locs.as_array
        values = block.values
        if isinstance(values, pd.Categorical):
            coded.append((int(positions[0]), values))
        elif isinstance(values, np.ndarray) and values.dtype.kind in "biuf" and values.dtype.itemsize <= 8:
            parts.append((positions, values))
        else:  # nullable or extension dtypes, objects, datetimes: lightgbm's own path (or its refusal)
            return None
    if len(coded) != len(categories):
        return None
    for (position, values), trained in zip(sorted(coded, key=lambda item: item[0]), categories):
        if list(values.categories) != list(trained):  # lightgbm would recode them first
            return None
        codes = values.codes
        if (codes == -1).any():
            codes = codes.astype(np.float64)
            codes[codes == -1] = np.nan
        parts.append(([position], codes.reshape(1, n)))
    target = np.result_type(*{values.dtype.type for _, values in parts}, np.float32)
    matrix = np.empty((frame.shape[1], n), dtype=target)  # pandas interleaves a frame's blocks so, then transposes
    for positions, values in parts:
        matrix[positions] = values
    return matrix.T
