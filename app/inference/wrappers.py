"""AutoGluon's model wrappers on a few rows: the same frames and arrays, without pandas' indexing on every call.

Once the feature pipeline and the boosters are cheap (generators.py, boosters.py), AutoGluon's wrappers around the
models cost more than the models on a one-row call of the mixed-type model: each model selects its features with
X[features] even when X holds exactly those columns in that order (LightGBM's, after renaming them): a label look-up
and a take over 119 columns, 0.17 ms against 0.02 ms for the copy it amounts to; a weighted ensemble reads its base
models' predictions back out of the frame it has just built, an X[columns] per base model; and the trainer sorts its
model graph again (networkx) to find the order of the same models. On up to FEW_ROWS rows these take positions, and
the order is remembered per model graph; anything else goes through AutoGluon's own code.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from autogluon.core.constants import QUANTILE
from autogluon.core.models import AbstractModel
from autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model import GreedyWeightedEnsembleModel

from app.inference.generators import FEW_ROWS
from app.threads import models as in_memory


def wrappers_by_position(predictor) -> list[str]:
    """Give the predictor's in-memory models and its trainer the few-rows paths; return what was changed."""
    changed = set()
    for model in in_memory(predictor):
        if isinstance(model, AbstractModel) and not model._is_features_in_same_as_ex and \
                "_preprocess_align_features" not in vars(model):
            model._preprocess_align_features = partial(_align, model, model._preprocess_align_features)
            changed.add("feature selection")
        if type(model) is GreedyWeightedEnsembleModel and "convert_pred_probas_df_to_list" not in vars(model):
            model.convert_pred_probas_df_to_list = partial(_stacked, model, model.convert_pred_probas_df_to_list)
            changed.add("ensemble inputs")
    trainer = predictor._trainer
    if "_construct_model_pred_order" not in vars(trainer):
        trainer._construct_model_pred_order = partial(_pred_order, trainer, trainer._construct_model_pred_order, {})
        changed.add("prediction order")
    return sorted(changed)


def _align(model, align, X: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """X[features] is a copy of X when X holds the features in their order."""
    features = model._features_internal_to_align
    if len(X) <= FEW_ROWS and len(X.columns) == len(features) and X.columns.tolist() == features:
        return X.copy()
    return align(X, **kwargs)


def _stacked(model, convert, frame: pd.DataFrame) -> list:
    """Each base model's columns of the stacked predictions, as AutoGluon's convert_pred_probas_df_to_list reads
    them: by position in the frame's one float block."""
    names = frame.columns.tolist()
    position = {name: i for i, name in enumerate(names)}
    if len(frame) > FEW_ROWS or len(position) != len(names) or frame._mgr.nblocks != 1 or \
            frame._mgr.blocks[0].dtype.kind != "f" or not all(name in position for name in model.features):
        return convert(frame)
    values = frame.to_numpy()
    width = model.num_pred_cols_per_model
    flat = width == 1 and model.problem_type != QUANTILE
    taken = []
    for i in range(len(model.base_model_names)):
        part = values[:, [position[name] for name in model.features[i * width:(i + 1) * width]]]
        taken.append(part.flatten() if flat else part)
    return taken


def _pred_order(trainer, construct, remembered: dict, models: list[str]) -> list[str]:
    """The order of the models' predictions, computed once per model graph and list of models."""
    graph = trainer.model_graph
    key = (tuple(models), id(graph), graph.number_of_nodes(), graph.number_of_edges())
    if key not in remembered:
        remembered[key] = construct(models)
    return list(remembered[key])
