"""scikit-learn forests called the way a one-thread worker should call them: the same answers, less Python.

scikit-learn calls each tree of a forest through joblib, which wraps every call (configuration context, warning
filters, functools.wraps), and each tree checks again what the forest has checked: the demo's 100-tree forest took
6.6 ms a row through both, about 1.7 ms calling each tree's traversal directly, and 1.1 ms walking all trees at once
with numpy (`StackedTrees`, for a few rows; more rows are cheaper tree by tree, in C).

Either way each tree's leaf values (what its predict_proba, or predict, returns for one output) are added in the
forest's order into the same float64 sums, so the answers are the same to the bit.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.utils.validation import check_is_fitted

from app.inference.errors import InvalidInput
from app.threads import estimators

CLASSIFIERS = (RandomForestClassifier, ExtraTreesClassifier)
REGRESSORS = (RandomForestRegressor, ExtraTreesRegressor)
STACKED_MAX_ROWS = 16  # beyond, per-tree traversal in C costs less CPU: the walk is depth × trees × rows in numpy
FLOAT32_MAX = float(np.finfo(np.float32).max)
STACKED_MAX_NODES = 2_000_000  # nodes of all trees; a larger forest is not copied (about 45 bytes a node)


def forests_in_turn(predictor) -> list[str]:
    """Make every one-thread, one-output scikit-learn forest of the predictor predict without joblib (a few rows:
    all trees walked at once); return the models changed."""
    changed = []
    for model, estimator in estimators(predictor):
        if getattr(estimator, "n_jobs", None) != 1 or getattr(estimator, "n_outputs_", None) != 1:
            continue
        if type(estimator) in CLASSIFIERS and "predict_proba" not in vars(estimator):
            estimator.predict_proba = partial(_forest_sum, estimator, int(estimator.n_classes_),
                                              StackedTrees.of(estimator))
            changed.append(model.name)
        elif type(estimator) in REGRESSORS and "predict" not in vars(estimator):
            estimator.predict = partial(_forest_sum, estimator, None, StackedTrees.of(estimator))
            changed.append(model.name)
    return sorted(changed)


def _forest_sum(forest, classes: int | None, stacked: "StackedTrees | None", X):
    """ForestClassifier.predict_proba (classes: their count) or ForestRegressor.predict (None) of scikit-learn 1.9
    for one output."""
    check_is_fitted(forest)
    if not _checked_already(forest, X):
        try:
            X = forest._validate_X_predict(X)  # float32, the forest's feature count: what each tree would check again
        except ValueError:
            if isinstance(X, np.ndarray) and X.dtype == np.float32 and np.isinf(X).any():
                # AutoGluon's float32 matrix: a request's finite number beyond float32, not a server fault
                raise InvalidInput(f"a numeric value is beyond what this model's forests read (at most "
                                   f"±{FLOAT32_MAX:.7g})", {"data": ["A number beyond ±3.4e38."]}) from None
            raise
    total = np.zeros((X.shape[0], classes) if classes else (X.shape[0],), dtype=np.float64)
    if stacked is not None and isinstance(X, np.ndarray) and X.shape[0] <= STACKED_MAX_ROWS:
        leaves = iter(stacked.leaf_values(X))
    else:
        leaves = (tree.tree_.predict(X) for tree in forest.estimators_)
    for values in leaves:  # one tree's rows × classes (a regressor: rows × 1), in the forest's order
        total += values[:, :classes] if classes else values[:, 0]
    total /= len(forest.estimators_)
    return total


def _checked_already(forest, X) -> bool:
    """Whether X is a few rows that scikit-learn's validation would hand back as they are (AutoGluon's float32
    matrix, without names, infinities or NaN); 0.06 ms a call saved."""
    return isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2 and X.flags.c_contiguous and \
        X.shape[0] <= STACKED_MAX_ROWS and X.shape[1] == forest.n_features_in_ and \
        not hasattr(forest, "feature_names_in_") and bool(np.isfinite(X).all())


class StackedTrees:
    """Every tree's nodes in one set of arrays, so that a few rows go down all trees together, one level a step.
    A leaf is its own child, so rows that reached one stay there while the others go on."""

    def __init__(self, trees: list):
        counts = [tree.node_count for tree in trees]
        offsets = np.cumsum([0] + counts[:-1])
        self.roots = offsets.astype(np.intp)
        lefts, rights = [], []
        for tree, offset in zip(trees, offsets):
            own = np.arange(tree.node_count, dtype=np.intp) + offset
            leaf = tree.children_left == -1
            lefts.append(np.where(leaf, own, tree.children_left + offset))
            rights.append(np.where(leaf, own, tree.children_right + offset))
        self.left, self.right = np.concatenate(lefts), np.concatenate(rights)
        self.feature = np.concatenate([np.maximum(tree.feature, 0) for tree in trees]).astype(np.intp)  # leaves: -2
        self.threshold = np.concatenate([tree.threshold for tree in trees])
        self.missing_left = np.concatenate([tree.missing_go_to_left for tree in trees]).astype(bool)
        self.value = np.concatenate([tree.value.reshape(tree.node_count, -1) for tree in trees])
        self.depth = max(tree.max_depth for tree in trees)

    @classmethod
    def of(cls, forest) -> "StackedTrees | None":
        trees = [estimator.tree_ for estimator in forest.estimators_]
        return cls(trees) if sum(tree.node_count for tree in trees) <= STACKED_MAX_NODES else None

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """trees × rows × values: the value array of the leaf each row reaches in each tree, as Tree.apply finds it
        (NaN goes where the split sends missing values; otherwise left when the float32 value ≤ the threshold)."""
        cells = X.ravel()  # C-ordered: row r's feature f is cell r × features + f
        starts = np.tile(np.arange(X.shape[0]) * X.shape[1], len(self.roots))
        node = np.repeat(self.roots, X.shape[0])
        gaps = bool(np.isnan(cells).any())
        for _ in range(self.depth):
            x = cells.take(starts + self.feature.take(node))
            left = x <= self.threshold.take(node)
            if gaps:
                left = np.where(np.isnan(x), self.missing_left.take(node), left)
            node = np.where(left, self.left.take(node), self.right.take(node))
        return self.value.take(node, axis=0).reshape(len(self.roots), X.shape[0], -1)
