"""The batcher: one model call for concurrent requests, each gets its own rows, failures stay with their owner."""
from __future__ import annotations

import threading
import time


from app.inference.batching import Batcher


def echo_predict(calls):
    def predict(parts, counts):
        calls.append(list(counts))
        if any(part.get("poison") for part in parts):
            raise ValueError("poisoned batch")
        return [list(part["rows"]) for part in parts]
    return predict


def test_concurrent_requests_share_a_call_and_get_their_own_rows():
    calls = []
    batcher = Batcher(echo_predict(calls), max_rows=1000, max_wait=0.05)
    results, barrier = {}, threading.Barrier(20)

    def request(i):
        rows = [f"{i}-{j}" for j in range(i % 4 + 1)]
        with batcher.ticket() as ticket:
            barrier.wait()
            results[i] = ticket.submit({"rows": rows}, len(rows))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [f"{i}-{j}" for j in range(i % 4 + 1)] for i in range(20)}
    assert len(calls) < 20 and sum(map(sum, calls)) == sum(i % 4 + 1 for i in range(20))
    assert (batcher.batches, batcher.requests) == (len(calls), 20)


def test_a_failing_request_fails_alone():
    calls = []
    batcher = Batcher(echo_predict(calls), max_rows=1000, max_wait=0.05)
    outcomes, barrier = {}, threading.Barrier(6)

    def request(i):
        columns = {"rows": [i], "poison": i == 3}
        with batcher.ticket() as ticket:
            barrier.wait()
            try:
                outcomes[i] = ticket.submit(columns, 1)
            except ValueError as exc:
                outcomes[i] = str(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {0: [0], 1: [1], 2: [2], 3: "poisoned batch", 4: [4], 5: [5]}


def test_a_lone_request_does_not_wait_for_the_bound():
    batcher = Batcher(echo_predict([]), max_rows=1000, max_wait=2.0)
    started = time.monotonic()
    with batcher.ticket() as ticket:
        assert ticket.submit({"rows": [1]}, 1) == [1]
    assert time.monotonic() - started < 0.5


def test_batches_respect_the_row_bound():
    calls = []
    batcher = Batcher(echo_predict(calls), max_rows=10, max_wait=0.05)
    barrier = threading.Barrier(8)

    def request():
        with batcher.ticket() as ticket:
            barrier.wait()
            ticket.submit({"rows": [0] * 4}, 4)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(sum(call) <= 10 for call in calls) and sum(map(sum, calls)) == 32


def test_withdrawn_tickets_do_not_hold_a_batch_back():
    batcher = Batcher(echo_predict([]), max_rows=1000, max_wait=5.0)
    with batcher.ticket():
        pass  # validation failed: the request never submits
    started = time.monotonic()
    with batcher.ticket() as ticket:
        ticket.submit({"rows": [1]}, 1)
    assert time.monotonic() - started < 1.0


def test_a_closed_batcher_still_answers():
    batcher = Batcher(echo_predict([]), max_rows=1000, max_wait=0.01)
    batcher.close()
    with batcher.ticket() as ticket:
        assert ticket.submit({"rows": [7]}, 1) == [7]
