"""Workers on CPUs of their own (AGSERVE_PIN_WORKERS): which CPUs, every thread of a worker on them, and a
replacement worker taking the CPUs its predecessor freed, under real gunicorn."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from app.threads import least_used, worker_cpu_groups
from tests.support.data import FEATURES, to_records
from tests.support.servers import gunicorn, wait_for_every_worker

ALLOWED = frozenset(os.sched_getaffinity(0))


def test_auto_pins_only_when_the_cpus_are_no_more_than_the_workers():
    assert worker_cpu_groups("auto", {0, 1}, 2) == [{0}, {1}]
    assert worker_cpu_groups("auto", {2, 3, 5}, 4) == [{2}, {3}, {5}]  # more workers than CPUs: they share
    assert worker_cpu_groups("auto", range(64), 2) == []  # a node's cores in the mask: not ours to share out
    assert worker_cpu_groups("auto", {3}, 2) == []  # one CPU: nothing to choose
    assert worker_cpu_groups("off", {0, 1}, 2) == []
    assert worker_cpu_groups("on", range(8), 3) == [{0, 1}, {2, 3, 4}, {5, 6, 7}]  # neighbours, all of them used
    assert worker_cpu_groups("on", {0, 1}, 1) == [{0, 1}]


def test_a_new_worker_takes_the_least_held_cpus():
    groups = worker_cpu_groups("auto", {0, 1, 2}, 3)
    assert least_used(groups, []) == {0}
    assert least_used(groups, [frozenset({0}), None, frozenset({2})]) == {1}
    assert least_used(groups, [frozenset({0}), frozenset({1}), frozenset({2}), frozenset({1})]) == {0}


def _cpus_of_each_thread(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


def _busy(server, dataset, requests_: int = 16) -> None:
    """Concurrent predictions, so each worker has started its request and batcher threads."""
    _, test = dataset
    rows = to_records(test[FEATURES].head(1))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: server.session().post(f"{server.base}/predict", json={"data": rows},
                                                                  timeout=30), range(requests_)))
    assert all(answer.status_code == 200 for answer in answers)


def _replaced(server, victim: int, dataset) -> int:
    """Kill a worker; the pid of the worker the master starts in its place, once it answers."""
    others = set(server.worker_pids()) - {victim}
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while victim in server.worker_pids() or len(server.worker_pids()) < 2:
        assert time.monotonic() < deadline, "the master did not replace the killed worker"
        time.sleep(0.1)
    wait_for_every_worker(server, 2, 90)
    _busy(server, dataset)
    return next(pid for pid in server.worker_pids() if pid not in others)


@pytest.mark.server
def test_each_worker_and_its_threads_keep_to_their_cpu_and_a_replacement_takes_the_freed_one(repository_path,
                                                                                              dataset):
    assert len(ALLOWED) == 2, f"this test needs a 2-CPU affinity mask to show pinning (have {sorted(ALLOWED)})"
    with gunicorn(repository_path, workers=2, AGSERVE_DEFAULT_MODEL="multiclass") as server:
        _busy(server, dataset)
        master = psutil.Process(server.process.pid)
        held = {pid: _cpus_of_each_thread(pid) for pid in server.worker_pids()}
        assert all(len(cpus) == 1 for cpus in held.values()), held  # every thread of a worker on the same CPUs
        assert sorted(next(iter(cpus)) for cpus in held.values()) == [{cpu} for cpu in sorted(ALLOWED)]
        assert master.cpu_affinity() == sorted(ALLOWED)  # the master is not pinned
        for pid in server.worker_pids():
            with server.only_worker(pid):
                ready = server.session().get(f"{server.base}/health/ready", timeout=10).json()
            assert ready["worker"]["pid"] == pid and set(ready["worker"]["cpus"]) == next(iter(held[pid]))

        # The worker on the last CPU goes: its replacement must not simply take the first group.
        victim, survivor = sorted(held, key=lambda pid: max(next(iter(held[pid]))), reverse=True)
        replacement = _replaced(server, victim, dataset)
        assert _cpus_of_each_thread(replacement) == held[victim]
        assert _cpus_of_each_thread(survivor) == held[survivor]


@pytest.mark.server
def test_off_leaves_every_worker_on_every_allowed_cpu(repository_path, dataset):
    with gunicorn(repository_path, workers=2, AGSERVE_DEFAULT_MODEL="multiclass", AGSERVE_PIN_WORKERS="off") as server:
        _busy(server, dataset)
        assert all(_cpus_of_each_thread(pid) == {ALLOWED} for pid in server.worker_pids())


@pytest.fixture()
def cpuset_of_cpu_0():
    """A real cgroup v1 cpuset holding only CPU 0; the path of its process list."""
    root = Path("/sys/fs/cgroup/cpuset")
    assert (root / "cpuset.cpus").is_file(), "this test needs the cgroup v1 cpuset controller"
    folder = root / f"agserve-test-{os.getpid()}"
    folder.mkdir()
    try:
        (folder / "cpuset.mems").write_text((root / "cpuset.mems").read_text())
        (folder / "cpuset.cpus").write_text(str(min(ALLOWED)))
        yield folder / "cgroup.procs"
    finally:
        for pid in (folder / "cgroup.procs").read_text().split():  # anything left goes back to the root
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(pid)
        folder.rmdir()


@pytest.mark.server
def test_a_worker_whose_cpu_was_taken_away_runs_unpinned_and_says_so(repository_path, dataset, tmp_path,
                                                                    cpuset_of_cpu_0):
    assert len(ALLOWED) == 2, f"this test needs a 2-CPU affinity mask (have {sorted(ALLOWED)})"
    log = tmp_path / "gunicorn.log"
    with gunicorn(repository_path, workers=2, AGSERVE_DEFAULT_MODEL="multiclass", log_path=log) as server:
        held = {pid: _cpus_of_each_thread(pid) for pid in server.worker_pids()}
        victim = next(pid for pid, cpus in held.items() if cpus == {frozenset({max(ALLOWED)})})
        cpuset_of_cpu_0.write_text(str(server.process.pid))  # the master (and what it forks) may use CPU 0 only
        replacement = _replaced(server, victim, dataset)
        assert _cpus_of_each_thread(replacement) == {frozenset({min(ALLOWED)})}
        assert f"worker not pinned to CPUs [{max(ALLOWED)}]" in log.read_text()
