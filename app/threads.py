"""Capping math-library threads so N workers never oversubscribe the cores."""
from __future__ import annotations

import os

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
