"""ServedModel and ModelRegistry without HTTP: the registry's look-ups and refusals, and a served version's own
prediction path against AutoGluon's in-process answers."""
from __future__ import annotations

import numpy as np
import pytest

from app.config import load_settings
from app.inference import ModelNotFound, ModelNotReady, ModelRegistry, ModelRepository
from app.inference.served import DirectTicket
from app.inference.tables import SlowPath, table_from_records
from tests.support.data import FEATURES, mixed_frame, to_records


@pytest.fixture(scope="module")
def registry(repository_path):
    settings = load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": False})
    found = ModelRegistry(ModelRepository(repository_path), names=("multiclass", "quantile"), default="multiclass")
    found.refresh(settings)
    assert found.ready, found.not_ready_reason()
    return found


def test_the_registry_resolves_names_the_default_and_versions(registry):
    assert registry.get(None) is registry.get("multiclass") is registry.get("multiclass", "1")
    with pytest.raises(ModelNotFound, match="'binary' is not served"):
        registry.get("binary")  # in the repository, but not among the names served
    with pytest.raises(ModelNotFound, match="version '2' is not served"):
        registry.get("quantile", "2")
    assert registry.status()["quantile"]["status"] == "ready"


def test_a_slot_without_a_loaded_version_is_not_ready(repository_path):
    empty = ModelRegistry(ModelRepository(repository_path), names=("binary",), default="binary")  # never refreshed
    with pytest.raises(ModelNotReady) as refused:
        empty.get(None)
    assert refused.value.status == 503 and not empty.ready
    several = ModelRegistry(ModelRepository(repository_path), names=("binary", "quantile"))
    assert several.default_name == ModelRepository(repository_path).default_model() != ""  # the recorded default


def test_a_served_version_predicts_as_autogluon_does(registry, dataset, in_process):
    _, test = dataset
    frame = test[FEATURES].iloc[:8]
    classifier, quantile = registry.get("multiclass"), registry.get("quantile")
    assert isinstance(classifier.admission(), DirectTicket)  # batching off: predicted in the caller's thread
    answer = classifier.predict(to_records(frame))
    assert answer.predictions == in_process["multiclass"].predict(frame).tolist()
    expected = in_process["multiclass"].predict_proba(frame)
    assert np.allclose([[row[c] for c in expected.columns.astype(str)] for row in answer.probabilities],
                       expected.to_numpy(), atol=1e-12)
    levels = quantile.predict(to_records(frame))
    assert np.allclose([list(row.values()) for row in levels.predictions],
                       in_process["quantile"].predict(frame).to_numpy(), atol=1e-9)
    assert levels.columns == ["0.1", "0.5", "0.9"] and levels.probabilities is None


def test_validation_takes_the_fast_path_or_marshmallow_with_the_same_columns(registry, dataset):
    _, test = dataset
    rows = to_records(test[FEATURES].iloc[:5])
    model = registry.get("multiclass")
    fast = model.validate_table(table_from_records(rows, FEATURES))
    first = next(i for i, row in enumerate(rows) if row["num"] is not None)
    mixed = [dict(row, num=str(row["num"])) if i == first else row for i, row in enumerate(rows)]
    with pytest.raises(SlowPath):  # a column of numbers and numeric text: the fast path does not vouch for it
        model.spec.convert(table_from_records(mixed, FEATURES))
    slow = model.validate_table(table_from_records(mixed, FEATURES))
    for name in FEATURES:
        left = fast[name].tolist() if isinstance(fast[name], np.ndarray) else list(fast[name])
        right = slow[name].tolist() if isinstance(slow[name], np.ndarray) else list(slow[name])
        assert [None if isinstance(v, float) and np.isnan(v) else v for v in left] == \
            [None if isinstance(v, float) and np.isnan(v) else v for v in right], name


@pytest.mark.parametrize("count", [2 ** 63 - 1, 2 ** 63 - 600, 2 ** 62 + 1, -(2 ** 63)])
def test_a_rows_answer_does_not_depend_on_a_missing_value_beside_it(registry, count):
    """A missing value in another row of the batch must not move a row's answer: AutoGluon casts an integer feature
    back to int64, and a float64 column would round 2**63 - 1 up to 2**63, which wraps to -2**63."""
    model = registry.get("multiclass")
    row = dict(to_records(mixed_frame(1, seed=5)[FEATURES])[0], cnt=count)
    alone = model.predict([row])
    beside = model.predict([row, dict(row, cnt=None)])
    assert beside.probabilities[0] == alone.probabilities[0]
    frame = model.frame(model.validate_table(table_from_records([row, dict(row, cnt=None)], model.feature_names)))
    transformed = model.predictor.transform_features(frame)
    assert transformed["cnt"].iloc[0] == count  # exact, never rounded or wrapped


def test_the_frame_owns_its_columns_and_has_the_training_dtypes(registry, in_process):
    """The frame is built without pandas' own copy, so no column may be the validated one: the prediction log and
    monitoring read those after the model call. Its dtypes are the training frame's, and its answers AutoGluon's."""
    model = registry.get("multiclass")
    training = mixed_frame(3, seed=7)[FEATURES]
    for rows in (to_records(training), [dict(row, cnt=None, num=None) for row in to_records(training)]):
        columns = model.validate_table(table_from_records(rows, model.feature_names))
        kept = {name: values.copy() for name, values in columns.items() if isinstance(values, np.ndarray)}
        assert kept  # numeric columns arrive as arrays, with or without a missing value
        frame = model.frame(columns)
        for name in kept:
            assert not np.shares_memory(frame[name].to_numpy(), columns[name]), name
        if rows[0]["cnt"] is not None:
            assert frame.dtypes.to_dict() == training.dtypes.to_dict()
        expected = in_process["multiclass"].predict_proba(frame.copy()).to_numpy().tolist()
        assert model.predict_frame(frame).matrix.tolist() == expected
        for name, values in kept.items():  # the model call left the validated columns as they were
            np.testing.assert_array_equal(columns[name], values)
