"""Forests walked without joblib (app/inference/forests.py) answer what scikit-learn answers, to the bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor

from app.inference.errors import InvalidInput
from app.inference.forests import STACKED_MAX_ROWS, StackedTrees, _forest_sum

FEATURES = 3


def fitted(kind, seed: int = 0):
    """A small forest fitted on data with missing values, so that its splits send NaN one way or the other."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, FEATURES)).round(1)  # rounded: many rows equal to a threshold's neighbours
    X[rng.random(X.shape) < 0.15] = np.nan
    signal = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1], nan=2.0)
    if kind in (RandomForestClassifier, ExtraTreesClassifier):
        return kind(n_estimators=25, n_jobs=1, random_state=seed).fit(X, np.digitize(signal, [-0.5, 0.7]))
    return kind(n_estimators=25, n_jobs=1, random_state=seed).fit(X, signal * 3.1)


FORESTS = {kind: fitted(kind) for kind in (RandomForestClassifier, ExtraTreesClassifier, RandomForestRegressor,
                                           ExtraTreesRegressor)}
CELL = st.one_of(st.just(np.nan), st.floats(-3, 3, width=32), st.sampled_from([0.0, -0.0, 0.05, 0.15, -1.25]))
REFUSED = st.sampled_from([None, np.inf, -np.inf])


def answer(call, X):
    try:
        values = call(X)
    except ValueError as exc:  # infinities: scikit-learn refuses them
        return "refused", "float32" if X.dtype == np.float32 else str(exc)
    except InvalidInput:  # ours, in AutoGluon's float32 matrix: a request's number too large for it
        return "refused", "float32"
    return values.dtype, values.shape, values.tobytes()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(list(FORESTS)),
       hnp.arrays(np.float64, st.tuples(st.integers(1, 2 * STACKED_MAX_ROWS), st.just(FEATURES)), elements=CELL),
       REFUSED, st.booleans())
def test_every_forest_answers_as_scikit_learn_for_any_rows(kind, X, refused, float32):
    """Both ways of walking the trees (stacked for a few rows, tree by tree for more) give scikit-learn's bytes, for
    float64 rows and for AutoGluon's float32 matrix (whose validation is skipped when scikit-learn would hand it
    back as it is); an infinity is refused as scikit-learn refuses it (in a float32 matrix, as a request's error)."""
    if refused is not None:
        X[0, 0] = refused
    if float32:
        X = X.astype(np.float32)
    forest = FORESTS[kind]
    classes = int(forest.n_classes_) if hasattr(forest, "n_classes_") else None
    own = answer(forest.predict_proba if classes else forest.predict, X)
    for stacked in (StackedTrees.of(forest), None):
        assert answer(lambda rows: _forest_sum(forest, classes, stacked, rows), X) == own


def test_the_stacked_walk_reaches_the_leaf_each_tree_reaches():
    """Leaf by leaf, not only in the sums: each tree's leaf for each row is the one Tree.apply finds."""
    forest = FORESTS[RandomForestClassifier]
    X = np.array([[np.nan, 0.1, -0.3], [0.0, np.nan, np.nan], [2.5, -2.5, 0.05]], dtype=np.float32)
    leaves = StackedTrees.of(forest).leaf_values(X)
    for tree, values in zip(forest.estimators_, leaves):
        assert np.array_equal(values, tree.tree_.value[tree.tree_.apply(X)].reshape(len(X), -1))


@pytest.mark.parametrize("limit, stacked", [(10, False), (10 ** 9, True)])
def test_a_forest_too_large_to_copy_keeps_walking_tree_by_tree(monkeypatch, limit, stacked):
    import app.inference.forests as forests

    monkeypatch.setattr(forests, "STACKED_MAX_NODES", limit)
    assert (StackedTrees.of(FORESTS[ExtraTreesRegressor]) is not None) is stacked
