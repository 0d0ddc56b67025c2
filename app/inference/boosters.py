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
    if not 1 <= len(frame) <= FEW_ROWS:
        return None
    columns: list = [None] * frame.shape[1]
    for block in frame._mgr.blocks:
        values = block.values
        if isinstance(values, pd.Categorical):
            columns[int(block.mgr_locs.as_array[0])] = values
        elif isinstance(values, np.ndarray):  # a block holds its columns as rows
            for position, column in zip(block.mgr_locs.as_array, values):
                columns[position] = column
        else:  # nullable or extension dtypes, datetimes: lightgbm's own path (or its refusal)
            return None
    return matrix_of_columns(columns, categories)


def matrix_of_columns(columns: list, categories: list[list]) -> np.ndarray | None:
    """That matrix from a frame's columns in order (numeric arrays and pandas Categoricals of n rows each), in one
    conversion; None where lightgbm would do anything else (objects, other categories than training's)."""
    values, coded = list(columns), 0
    for i, column in enumerate(columns):
        if isinstance(column, pd.Categorical):
            codes = _codes(column, categories[coded]) if coded < len(categories) else None
            if codes is None:
                return None
            values[i], coded = codes, coded + 1
        elif type(column) is not np.ndarray:
            return None
    dtypes = {column.dtype for column in values}
    if coded != len(categories) or not all(_numeric(dtype) for dtype in dtypes):
        return None
    return np.array(values, dtype=np.result_type(*{dtype.type for dtype in dtypes}, np.float32)).T


def _numeric(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf" and dtype.itemsize <= 8


def _codes(values: pd.Categorical, trained: list) -> np.ndarray | None:
    """A categorical column's codes as lightgbm reads them (NaN for a missing or unseen value), or None when its
    categories are not training's (lightgbm would recode them first)."""
    if list(values.categories) != list(trained):
        return None
    codes = values.codes
    if (codes == -1).any():
        codes = codes.astype(np.float64)
        codes[codes == -1] = np.nan
    return codes
