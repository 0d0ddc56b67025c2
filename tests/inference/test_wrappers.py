"""AutoGluon's model wrappers by position (app/inference/wrappers.py): what they cannot vouch for goes to AutoGluon."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.config import load_settings
from app.inference import ModelRegistry, ModelRepository
from app.inference.wrappers import _align, _stacked
from app.threads import models


@pytest.fixture(scope="module")
def multiclass(repository_path):
    settings = load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": False})
    registry = ModelRegistry(ModelRepository(repository_path), names=("multiclass",), default="multiclass")
    registry.refresh(settings)
    return registry.get("multiclass").predictor


def _patched(predictor, attribute: str):
    found = [m for m in models(predictor) if attribute in vars(m)]
    assert found, f"no model has {attribute} replaced"
    return found[0]


def test_an_ensemble_reads_its_base_models_columns_wherever_they_are(multiclass):
    """Two base models of four classes each: the stacked frame in AutoGluon's order, in another order, with a
    column missing, or of more rows than a few: each base model's block equals AutoGluon's own reading."""
    ensemble = _patched(multiclass, "convert_pred_probas_df_to_list")
    own = vars(ensemble)["convert_pred_probas_df_to_list"].args[1]
    assert len(ensemble.base_model_names) == 2 and ensemble.num_pred_cols_per_model == 4
    rng = np.random.default_rng(0)
    for rows, order in [(1, None), (3, "shuffled"), (16, "reversed"), (17, None)]:
        columns = list(ensemble.features)
        columns = {None: columns, "reversed": columns[::-1],
                   "shuffled": list(rng.permutation(columns))}[order]
        frame = pd.DataFrame(rng.random((rows, len(columns))), columns=columns)
        ours, theirs = ensemble.convert_pred_probas_df_to_list(frame), own(frame)
        assert [a.tobytes() for a in ours] == [b.tobytes() for b in theirs]
        assert [a.shape for a in ours] == [b.shape for b in theirs]
    with pytest.raises(KeyError):  # a base model's column missing: AutoGluon's own error
        _stacked(ensemble, own, pd.DataFrame(np.zeros((1, 5)), columns=list(ensemble.features)[:5]))


def test_feature_selection_copies_only_when_the_columns_are_the_features_in_order(multiclass):
    model = _patched(multiclass, "_preprocess_align_features")
    own = vars(model)["_preprocess_align_features"].args[1]
    features = model._features_internal_to_align
    frame = pd.DataFrame(np.arange(2 * len(features), dtype="float64").reshape(2, -1), columns=features)
    for X in (frame, frame[features[::-1]], frame.assign(extra=1.0), pd.concat([frame] * 9, ignore_index=True)):
        got = _align(model, own, X)
        pd.testing.assert_frame_equal(got, X[features], check_exact=True)
        assert got is not X  # a copy, as X[features] is: the models may write into theirs


def test_the_prediction_order_is_remembered_per_model_list(multiclass):
    trainer = multiclass._trainer
    own = vars(trainer)["_construct_model_pred_order"].args[1]
    best = trainer.model_best
    first = trainer._construct_model_pred_order([best])
    first.append("changed by a caller")
    assert trainer._construct_model_pred_order([best]) == own([best])
    assert trainer._construct_model_pred_order(trainer.get_model_names()) == own(trainer.get_model_names())
