"""The worker's thread pool on its own; the worker itself is tested through a real gunicorn (tests/server/)."""
from __future__ import annotations

import threading
import time

import pytest

from app.workers import ConnectionShares, WarmestFirstPool


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _idle(pool: WarmestFirstPool) -> int:
    return len(pool._idle)


def test_the_thread_that_went_idle_last_takes_the_next_work():
    pool = WarmestFirstPool(8)
    gate = threading.Barrier(9)
    started = [pool.submit(gate.wait) for _ in range(8)]  # eight threads busy at once
    gate.wait()
    for future in started:
        future.result(timeout=10)
    _wait_for(lambda: _idle(pool) == 8)
    served = []
    for _ in range(20):  # one at a time, as a lone client's requests come
        served.append(pool.submit(threading.get_ident).result(timeout=10))
        _wait_for(lambda: _idle(pool) == 8)
    pool.shutdown(wait=False)
    assert len(set(served)) == 1, f"{len(set(served))} threads took 20 requests in turn"


def test_work_beyond_the_threads_waits_and_every_future_gets_its_result_or_its_exception():
    pool, lock, running, most = WarmestFirstPool(2), threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        if i % 3 == 0:
            raise ValueError(i)
        return i * i

    futures = [pool.submit(work, i) for i in range(12)]
    for i, future in enumerate(futures):
        if i % 3 == 0:
            with pytest.raises(ValueError):
                future.result(timeout=10)
        else:
            assert future.result(timeout=10) == i * i
    assert most[0] == 2
    pool.shutdown(wait=False)


def test_shutdown_ends_idle_threads_lets_busy_ones_finish_and_refuses_new_work():
    pool, release = WarmestFirstPool(4), threading.Event()
    idle = [pool.submit(lambda: None) for _ in range(3)]
    busy = pool.submit(release.wait, 10)
    for future in idle:
        future.result(timeout=10)
    threads = {t for t in threading.enumerate() if t.name.startswith("agserve-request-")}
    assert threads
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    release.set()
    assert busy.result(timeout=10) is True
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_a_worker_above_its_share_of_connections_stops_accepting_and_a_loading_one_does_not_count():
    shares = ConnectionShares()
    first, second = shares.free_slot(set()), shares.free_slot({0})
    assert (first, second) == (0, 1) and shares.free_slot(set(range(ConnectionShares.SLOTS))) is None
    assert not shares.over_share(first, 30), "alone (the other still loading its model): it takes everything"
    assert not shares.over_share(second, 0)
    assert shares.over_share(first, 30), "30 of 30 once the other accepts: above the mean (15) and one"
    assert not shares.over_share(second, 14) and not shares.over_share(first, 16)
    assert shares.over_share(first, 18) and not shares.over_share(second, 14)  # 18 > 16 + 1
    shares.release(second)  # it exits: the first takes everything again
    assert not shares.over_share(first, 18)
    assert not shares.over_share(second, 0) and shares.over_share(first, 18)
    shares.stamps[second] -= ConnectionShares.FRESH  # its loop stalled since: it counts no more
    assert not shares.over_share(first, 18)
