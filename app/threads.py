"""Capping math-library threads so N workers never oversubscribe the cores, and which cores each worker runs on."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable

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
    for model, estimator in estimators(predictor):
        if getattr(estimator, "n_jobs", None) not in (None, threads):
            estimator.n_jobs = threads
            changed.append(model.name)
    return sorted(changed)


def models(predictor):
    """Every in-memory model of the predictor, the children of bagged ensembles included."""
    stack = list(predictor._trainer.models.values())  # persisted models are objects, others names
    while stack:
        model = stack.pop()
        if isinstance(getattr(model, "models", None), list):  # a bagged ensemble: its persisted children
            stack.extend(model.models)
        yield model


def estimators(predictor, kind: type | None = None):
    """(model, fitted estimator) of every in-memory model: the estimators of class kind (scikit-learn's, by
    default)."""
    if kind is None:
        from sklearn.base import BaseEstimator as kind

    for model in models(predictor):
        estimator = getattr(model, "model", None)
        if isinstance(estimator, kind):
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


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where the OS has no such mask)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def worker_cpu_groups(mode: str, allowed: Iterable[int], workers: int) -> list[frozenset[int]]:
    """The CPU sets workers are pinned to (AGSERVE_PIN_WORKERS), or none: the allowed CPUs in min(workers, CPUs)
    groups of neighbours. "auto" pins only when there are no more allowed CPUs than workers, so the CPUs are this
    server's to share out (a machine or a cpuset sized for it), never when the mask shows a whole node's cores."""
    cpus = sorted(allowed)
    if mode == "off" or len(cpus) < 2 or (mode == "auto" and len(cpus) > workers):
        return []
    groups = min(workers, len(cpus))
    return [frozenset(cpus[i * len(cpus) // groups:(i + 1) * len(cpus) // groups]) for i in range(groups)]


def least_used(groups: list[frozenset[int]], taken: Iterable[frozenset[int] | None]) -> frozenset[int]:
    """The group the fewest live workers hold (the first of those), so a replaced worker takes the freed CPUs."""
    holders = Counter(group for group in taken if group is not None)
    return min(groups, key=lambda group: holders[group])
