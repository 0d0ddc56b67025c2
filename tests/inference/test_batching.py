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


def test_predictions_queued_behind_deferrable_work_go_first_and_never_share_its_call():
    """Explanations' masked rows wait while predictions are queued, so a prediction waits for at most the call
    already running, not for every masked chunk queued before it."""
    calls, started, release = [], threading.Event(), threading.Event()

    def predict(parts, counts):
        calls.append([part["who"] for part in parts])
        if parts[0]["who"] == "blocker":
            started.set()
            release.wait(5)
        return [part["who"] for part in parts]

    batcher = Batcher(predict, max_rows=1000, max_wait=0.001)
    blocker = threading.Thread(target=lambda: batcher.ticket().submit({"who": "blocker"}, 1))
    blocker.start()
    assert started.wait(5)

    def submit(who, deferrable):
        with batcher.ticket() as ticket:
            ticket.submit({"who": who}, 1, deferrable=deferrable)

    threads = [threading.Thread(target=submit, args=(f"masked-{i}", True)) for i in range(3)]
    for thread in threads:  # the masked chunks queue first...
        thread.start()
        time.sleep(0.02)
    predictions = [threading.Thread(target=submit, args=(f"predict-{i}", False)) for i in range(2)]
    for thread in predictions:  # ...then predictions arrive while the blocker runs
        thread.start()
        time.sleep(0.02)
    release.set()
    for thread in [blocker, *threads, *predictions]:
        thread.join(5)
    assert calls[0] == ["blocker"]
    assert sorted(calls[1]) == ["predict-0", "predict-1"]
    assert sorted(sum(calls[2:], [])) == ["masked-0", "masked-1", "masked-2"]
