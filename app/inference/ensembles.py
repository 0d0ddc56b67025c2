"""The trainer's prediction on a few rows in arrays: weighted ensembles, LightGBM and forests (bagged or not).

Once the feature pipeline runs in columns (generators.py), most of a one-row call of the mixed-type model is frames
built to be taken apart again: the pipeline's output frame (0.13 ms for 119 columns), LightGBM's copy and renaming
of it and lightgbm's matrix of that, the weighted ensemble's frame of its base models' predictions and its reading
them back. For the shapes below a plan made at load time does the same arithmetic on the arrays those frames held,
through AutoGluon's and lightgbm's own functions (the booster, the ensemble's weighting, each model's conversion of
its output, the label cleaner); any other base model gets the pipeline's frame and runs as the trainer runs it. No
plan for models not in memory, temperature scaling, conformalization, batching inside a model or stacking on
original features, nor for quantile models; a column a plan cannot vouch for sends the call to the trainer (Declined).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import pandas as pd
from autogluon.core.constants import BINARY, MULTICLASS, QUANTILE, REGRESSION, SOFTCLASS
from autogluon.core.models import AbstractModel
from autogluon.core.models.ensemble.stacker_ensemble_model import StackerEnsembleModel
from autogluon.core.models.ensemble.weighted_ensemble_model import WeightedEnsembleModel
from autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model import (GreedyWeightedEnsembleModel,
                                                                                    SimpleWeightedEnsembleModel)
from autogluon.core.utils import get_pred_from_proba, normalize_pred_probas
from lightgbm import Booster

from app.inference.boosters import matrix_of_columns
from app.inference.forests import CLASSIFIERS, REGRESSORS
from app.inference.generators import Columns, Declined, frame_of

# (the pipeline's output columns, n rows, the lazily built frame of them) → a model's predict_proba
Step = Callable[[Columns, int, "Frame"], np.ndarray]


class Unplanned(Exception):
    """A model the plans do not cover: the trainer predicts as it does."""


class Frame:
    """The pipeline's output frame, built once for the base models that take one."""

    def __init__(self, columns: Columns, n: int):
        self.columns, self.n, self._frame = columns, n, None

    def get(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = frame_of(self.columns, self.n)
        return self._frame


class Plan:
    """The best model's predict_proba as the trainer returns it, then AutoGluon's post-processing: probabilities of
    every class (predict_proba's as_multiclass=True, as_pandas=False), or a regressor's values (predict's)."""

    def __init__(self, predictor, step: Step, taken: list[str]):
        self.learner, self.step, self.taken = predictor._learner, step, taken
        self.regression = predictor.problem_type == REGRESSION

    def __call__(self, columns: Columns, n: int) -> np.ndarray:
        internal = self.step(columns, n, Frame(columns, n))
        if self.regression:
            learner = self.learner
            values = get_pred_from_proba(internal, learner.label_cleaner.problem_type_transform or REGRESSION)
            return learner._post_process_predict(values, as_pandas=False)
        return self.learner._post_process_predict_proba(internal, as_pandas=False, as_multiclass=True)


def array_plan(predictor) -> Plan | None:
    """A plan for a classifier's or regressor's best model, or None where it has a part the plans do not cover."""
    if predictor.problem_type not in (BINARY, MULTICLASS, REGRESSION):
        return None
    trainer = predictor._trainer
    taken: list[str] = []
    try:
        step = _step(trainer, trainer._get_best(), taken)
    except Unplanned:
        return None
    return Plan(predictor, step, sorted(set(taken)))


def _step(trainer, name: str, taken: list[str]) -> Step:
    model = trainer.models.get(name)
    if not isinstance(model, AbstractModel):  # not persisted: the trainer loads it from disk on every call
        raise Unplanned
    if isinstance(model, StackerEnsembleModel) and model.stack_column_prefix_lst:
        return _weighted_ensemble(trainer, model, taken)
    if isinstance(model, StackerEnsembleModel):  # bagged, on the pipeline's features only
        children = [_leaf(child) for child in model.models]
        if children and all(children) and _plain(model, stateful=False) and \
                all(child.reads == children[0].reads for child in children):
            taken.append(children[0].taken)
            return partial(_bagged, children)
        return lambda columns, n, frame: model.predict_proba(frame.get(), infer=False, model_pred_proba_dict={})
    leaf = _leaf(model)
    if leaf is not None:
        taken.append(leaf.taken)
        return lambda columns, n, frame: leaf.predict(leaf.matrix(columns))
    return lambda columns, n, frame: model.predict_proba(frame.get())


def _leaf(model) -> "_LightGBM | _Forest | None":
    return _LightGBM.of(model) or _Forest.of(model)


def _bagged(children: list, columns: Columns, n: int, frame: Frame) -> np.ndarray:
    """BaggedEnsembleModel._predict_proba_internal: its children's answers summed in their order, over their count."""
    matrix = children[0].matrix(columns)
    y = children[0].predict(matrix)
    for child in children[1:]:
        y += child.predict(matrix)
    return y / len(children)


def _plain(model, stateful: bool = True) -> bool:
    """Nothing between a model's _predict_proba and its answer that a plan skips (a bagged ensemble's own
    preprocess has no stateful part: its children's has)."""
    return model.temperature_scalar is None and model.conformalize is None and model._get_max_batch_size() is None \
        and (not stateful or model._model_specific_feature_generators is None) \
        and not {"predict_proba", "_predict_proba", "_predict_proba_internal", "preprocess"} & vars(model).keys()


def _finish(model, y: np.ndarray) -> np.ndarray:
    """AbstractModel._predict_proba_internal's end: normalized when the model says so, float32."""
    if model.normalize_pred_probas:
        y = normalize_pred_probas(y, model.problem_type)
    return y.astype(np.float32)


def _aligned(model) -> bool:
    """The model's stateful preprocess selects its features in the order its non-adaptive one left them."""
    internal = model._features_internal_lgbm if getattr(model, "_requires_remap", False) else model.features
    return model._is_features_in_same_as_ex or list(model._features_internal_to_align) == list(internal)


class _LightGBM:
    """LGBModel's predict_proba: the booster on the matrix of its features, taken from the pipeline's columns."""
    taken = "LightGBM on its matrix"

    def __init__(self, model, booster: Booster):
        self.model, self.booster = model, booster
        self.features, self.categories = list(model.features), booster.pandas_categorical
        self.reads = (type(self), self.features, self.categories)

    @classmethod
    def of(cls, model) -> "_LightGBM | None":
        booster = getattr(model, "model", None)
        if type(model).__name__ != "LGBModel" or type(booster) is not Booster or booster.pandas_categorical is None \
                or not _plain(model) or not _aligned(model):
            return None
        return cls(model, booster)

    def matrix(self, columns: Columns) -> np.ndarray:
        try:
            matrix = matrix_of_columns([columns[name] for name in self.features], self.categories)
        except KeyError:
            raise Declined from None
        if matrix is None:
            raise Declined
        return matrix

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        model = self.model
        return _finish(model, model._post_process_predictions(self.booster.predict(matrix, num_threads=0)))


class _Forest:
    """RFModel's and XTModel's predict_proba: the forest on its features' float32 matrix, missing values 0 (their
    `X.fillna(0).to_numpy(dtype=np.float32)`), for forests without categorical features to label-encode."""
    taken = "forests on their matrix"

    def __init__(self, model):
        self.model, self.forest, self.features = model, model.model, list(model.features)
        self.regression = model.problem_type == REGRESSION
        self.reads = (type(self), self.features)

    @classmethod
    def of(cls, model) -> "_Forest | None":
        if type(model).__name__ not in ("RFModel", "XTModel") or type(model.model) not in CLASSIFIERS + REGRESSORS \
                or model._label_encoder is None or model._label_encoder.features_in or not _plain(model) \
                or not _aligned(model):
            return None
        return cls(model)

    def matrix(self, columns: Columns) -> np.ndarray:
        try:
            values = [columns[name] for name in self.features]
        except KeyError:
            raise Declined from None
        if not all(type(column) is np.ndarray and column.dtype.kind in "biuf" for column in values):
            raise Declined  # categories, objects: AutoGluon's own preprocess
        matrix = np.array(values, dtype=np.float32)  # each column cast as pandas interleaves it: directly
        matrix[np.isnan(matrix)] = 0
        return np.ascontiguousarray(matrix.T)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        model = self.model
        if self.regression:
            return _finish(model, self.forest.predict(matrix))
        return _finish(model, model._convert_proba_to_unified_form(self.forest.predict_proba(matrix)))


def _weighted_ensemble(trainer, model, taken: list[str]) -> Step:
    """A weighted ensemble's predict_proba from its base models' arrays: the columns of its stacked frame by
    position, its weights applied by EnsembleSelection's own predict_proba."""
    children = model.models
    if type(model) is not WeightedEnsembleModel or model.params.get("use_orig_features") is not False or \
            len(children) != 1 or not _plain(model, stateful=False):
        raise Unplanned
    child = children[0]
    if type(child) not in (GreedyWeightedEnsembleModel, SimpleWeightedEnsembleModel) or not _plain(child) or \
            not child._is_features_in_same_as_ex:
        raise Unplanned
    bases = [_step(trainer, model.stack_column_prefix_to_model_map[prefix], taken)
             for prefix in model.stack_column_prefix_lst]
    position = {name: i for i, name in enumerate(model.stack_columns)}
    width = child.num_pred_cols_per_model
    try:
        picks = [[position[name] for name in child.features[i * width:(i + 1) * width]]
                 for i in range(len(child.base_model_names))]
    except KeyError:
        raise Unplanned from None
    flat = width == 1 and model.problem_type != QUANTILE
    together = model.problem_type in (MULTICLASS, SOFTCLASS, QUANTILE)
    regression = model.problem_type == REGRESSION
    taken.append("weighted ensemble on arrays")

    def step(columns: Columns, n: int, frame: Frame) -> np.ndarray:
        predictions = [base(columns, n, frame) for base in bases]
        # pred_probas_to_df's values, then convert_pred_probas_df_to_list's columns of them
        stacked = np.concatenate(predictions, axis=1) if together else np.asarray(predictions).T
        inputs: list[Any] = [stacked[:, pick] for pick in picks]
        if flat:
            inputs = [part.flatten() for part in inputs]
        if regression:  # AbstractModel._predict_proba: a regressor's weighted values, as they are
            y = _finish(child, child.model.predict(inputs))
        else:
            y = _finish(child, child._convert_proba_to_unified_form(child.model.predict_proba(inputs)))
        return y / model.n_children
    return step
