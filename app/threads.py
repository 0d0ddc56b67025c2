"""Capping math-library threads so N workers never oversubscribe the cores."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def export_thread_limits(threads: int) -> None:
    """Set the variables OpenMP/BLAS read when they load; must run before the worker imports them."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)


def apply_thread_limits(threads: int) -> list[dict]:
    """Limit the thread pools already loaded in this process; return what threadpoolctl sees."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=threads)
    return [{"library": i["internal_api"], "threads": i["num_threads"]} for i in threadpool_info()]


def cap_estimator_jobs(predictor, threads: int) -> list[str]:
    """Lower the n_jobs of every in-memory scikit-learn estimator (random forest, extra trees, KNN) to this worker's
    math threads; return the models changed. Their fit-time n_jobs (all cores) makes joblib start a thread pool on
    every call, which threadpoolctl does not govern and which costs more than the trees for a few rows."""
    changed = []
    for model, estimator in _estimators(predictor):
        if getattr(estimator, "n_jobs", None) not in (None, threads):
            estimator.n_jobs = threads
            changed.append(model.name)
    return sorted(changed)


def forests_in_turn(predictor) -> list[str]:
    """Make every one-thread, one-output scikit-learn forest of the predictor call its trees in turn, without joblib;
    return the models changed. joblib wraps each tree's call (configuration context, warning filters,
    functools.wraps) and each tree re-checks that it is fitted (scikit-learn's tags machinery): the demo's 100-tree
    forest took 6.6 ms a row through both, 1.1 ms without. Each tree's leaf values (`tree_.predict`, what its own
    predict_proba and predict return for one output) are added in the same order into the same float64 sums, so the
    answers are the same to the bit."""
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor

    changed = []
    for model, estimator in _estimators(predictor):
        if estimator.n_jobs != 1 or getattr(estimator, "n_outputs_", None) != 1:
            continue
        if type(estimator) in (RandomForestClassifier, ExtraTreesClassifier) and "predict_proba" not in vars(estimator):
            estimator.predict_proba = partial(_forest_sum, estimator, int(estimator.n_classes_))
            changed.append(model.name)
        elif type(estimator) in (RandomForestRegressor, ExtraTreesRegressor) and "predict" not in vars(estimator):
            estimator.predict = partial(_forest_sum, estimator, None)
            changed.append(model.name)
    return sorted(changed)


def _forest_sum(forest, classes: int | None, X):
    """ForestClassifier.predict_proba (classes: their count) or ForestRegressor.predict (None) of scikit-learn 1.9
    for one output, the trees' leaf values summed in turn in this thread."""
    import numpy as np  # not at the top: gunicorn's master imports this module and must not load OpenBLAS
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(forest)
    X = forest._validate_X_predict(X)  # float32, the forest's feature count: what each tree would check again
    total = np.zeros((X.shape[0], classes) if classes else (X.shape[0],), dtype=np.float64)
    for tree in forest.estimators_:
        values = tree.tree_.predict(X)  # rows × classes (a regressor: rows × 1), as each tree reads them
        total += values[:, :classes] if classes else values[:, 0]
    total /= len(forest.estimators_)
    return total


def _estimators(predictor):
    """(model, scikit-learn estimator) of every in-memory model, the children of bagged ensembles included."""
    from sklearn.base import BaseEstimator

    stack = list(predictor._trainer.models.values())  # persisted models are objects, others names
    while stack:
        model = stack.pop()
        if isinstance(getattr(model, "models", None), list):  # a bagged ensemble: its persisted children
            stack.extend(model.models)
        estimator = getattr(model, "model", None)
        if isinstance(estimator, BaseEstimator):
            yield model, estimator


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs the container's CPU quota allows (cgroup v2 cpu.max, else v1 cfs_quota_us); None when unlimited.

    A quota is what a container's CPU limit sets, while the affinity mask still shows every core of the node."""
    limits = []
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: every level from ours up to the root may set cpu.max
            folder = root / path.lstrip("/")
            while True:
                limits.append(_quota((folder / "cpu.max").read_text().split()) if (folder / "cpu.max").is_file() else None)
                if folder == root or root not in folder.parents:
                    break
                folder = folder.parent
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in (root / "cpu,cpuacct", root / "cpu"):
                folder = mount / path.lstrip("/")
                quota, period = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
                if quota.is_file() and period.is_file():
                    limits.append(_quota([quota.read_text().strip(), period.read_text().strip()]))
                    break
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _quota(fields: list[str]) -> float | None:
    """'max 100000' → None; '150000 100000' → 1.5; v1's '-1' quota → None."""
    if len(fields) != 2 or fields[0] in ("max", "-1"):
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None
