"""The batcher: one model call for concurrent requests, each gets its own rows, failures stay with their owner."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.inference.batching import Batcher
from tests.support.servers import eventually


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


def _wakes(thread: threading.Thread) -> int:
    """How often the thread has gone to sleep and been woken (Linux counts it per thread)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread counters are Linux's")
def test_lone_requests_predict_in_their_own_thread_without_waking_the_batcher():
    """At concurrency 1 the batcher thread stays asleep: each wake-up would take the GIL from the request."""
    calls = []
    batcher = Batcher(echo_predict(calls), max_rows=1000, max_wait=0.05)
    assert eventually(lambda: _wakes(batcher._thread) >= 1, timeout=5)  # parked in its wait
    time.sleep(0.05)
    before = _wakes(batcher._thread)
    for i in range(50):
        with batcher.ticket() as ticket:
            assert ticket.submit({"rows": [i]}, 1) == [i]
    assert _wakes(batcher._thread) == before
    assert (batcher.batches, len(calls)) == (50, 50)


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
        with batcher.ticket(deferrable) as ticket:
            ticket.submit({"who": who}, 1)

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


def _timeline(share: float, seconds: float = 0.6) -> tuple[list[tuple[str, float, float]], float]:
    """Predictions back to back from one caller for `seconds` while an explanation submits 20 ms deferrable calls
    in a loop; returns every model call (kind, start, end) and when the predictions stopped."""
    calls, stop = [], threading.Event()

    def predict(parts, counts):
        started = time.monotonic()
        time.sleep(0.02 if parts[0]["kind"] == "masked" else 0.002)
        calls.append((parts[0]["kind"], started, time.monotonic()))
        return [None] * len(parts)

    batcher = Batcher(predict, max_rows=1000, max_wait=0.001, deferred_share=share)

    def explaining():
        for _ in range(200):  # bounded: about 4 s of masked calls at most
            if stop.is_set():
                return
            with batcher.ticket(deferrable=True) as ticket:
                ticket.submit({"kind": "masked"}, 1)

    explainer = threading.Thread(target=explaining)
    explainer.start()
    ended = time.monotonic() + seconds
    while time.monotonic() < ended:
        with batcher.ticket() as ticket:
            ticket.submit({"kind": "predict"}, 1)
        time.sleep(0.001)  # the caller's own work between requests: the batcher is idle meanwhile
    quiet = time.monotonic()
    time.sleep(0.3)
    stop.set()
    explainer.join(5)
    return calls, quiet


def _masked_share(calls: list[tuple[str, float, float]]) -> float:
    """The share of the time from the first prediction's call to the last one's that masked calls took."""
    predicting = [c for c in calls if c[0] == "predict"]
    start, end = predicting[0][1], predicting[-1][2]
    return sum(min(e, end) - max(s, start) for kind, s, e in calls if kind == "masked" and s < end and e > start) / \
        (end - start)


def test_while_predictions_keep_coming_deferrable_work_pauses_to_its_share_and_resumes_when_they_stop():
    """Explanations yield, not only queue: with deferred_share 0.2 their calls take about a fifth of the model's
    time while predictions come (without the pause, nearly all of it), and run back to back once predictions stop."""
    calls, quiet = _timeline(share=0.2)
    share = _masked_share(calls)
    assert 0.05 < share < 0.3, share  # it yields, yet still makes progress under steady predictions
    after = [c for c in calls if c[0] == "masked" and c[1] >= quiet + 0.05]
    assert len(after) >= 5  # 250 ms without predictions: 20 ms calls nearly back to back (12 at most)
    gaps = [b[1] - a[2] for a, b in zip(after, after[1:])]
    assert max(gaps) < 0.05, gaps  # paused, each would be 80 ms


def test_without_a_share_limit_deferrable_work_runs_between_predictions():
    """The control for the test above: with deferred_share 1 the same explanation takes most of the model's time."""
    calls, _ = _timeline(share=1.0)
    assert _masked_share(calls) > 0.5
