"""Micro-batching through a real 2-worker gunicorn: own rows back, bad requests fail alone, no added wait."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.support.answers import expected_answers
from tests.support.data import FEATURES, to_records
from tests.support.servers import gunicorn

pytestmark = pytest.mark.server
WAIT_MS = 1000  # a long wait bound, so that any needless waiting would show


@pytest.fixture(scope="module")
def server(repository_path):
    # Cache off: every request must reach the batcher (the load repeats rows).
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="multiclass", AGSERVE_CACHE="false",
                  AGSERVE_BATCH_MAX_WAIT_MS=str(WAIT_MS)) as running:
        yield running


def batching_stats(server):
    """(model calls, requests) summed over both workers."""
    calls = answered = 0
    for pid in server.worker_pids():
        with server.only_worker(pid):
            stats = requests.get(f"{server.base}/health/ready", headers={"Connection": "close"},
                                 timeout=10).json()["models"]["multiclass"]["batching"]
        calls, answered = calls + stats["batches"], answered + stats["requests"]
    return calls, answered


def fire(server, bodies):
    """Send every body at once from its own thread and connection; return the responses in order."""
    responses = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def send(i):
        barrier.wait()
        responses[i] = requests.post(f"{server.base}/predict", json=bodies[i], timeout=60,
                                     headers={"X-API-Key": server.key, "Connection": "close"})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_concurrent_requests_each_get_exactly_their_own_rows(server, in_process, dataset):
    frame = dataset[1][FEATURES]
    calls_before, answered_before = batching_stats(server)
    slices = [frame.iloc[i * 2:i * 2 + (i % 3) + 1] for i in range(32)]
    for _ in range(3):
        responses = fire(server, [{"data": to_records(part)} for part in slices])
        for part, response in zip(slices, responses):
            assert response.status_code == 200
            body = response.json()
            assert (body["predictions"], body["probabilities"]) == expected_answers(in_process["multiclass"], part)
    calls, answered = batching_stats(server)
    assert answered - answered_before == 96
    assert calls - calls_before < 96, "concurrent requests should have shared model calls"


def test_a_bad_request_among_good_ones_fails_alone(server, dataset):
    frame = dataset[1][FEATURES]
    bodies = [{"data": to_records(frame.iloc[i:i + 1])} for i in range(16)]
    bodies[7] = {"data": [dict(to_records(frame.iloc[7:8])[0], num="not a number")]}
    responses = fire(server, bodies)
    assert [r.status_code for r in responses] == [200] * 7 + [422] + [200] * 8
    assert responses[7].json()["details"]["rows"]["0"] == {"num": ["Not a valid number."]}


def test_a_lone_request_is_not_held_for_the_wait_bound(server, dataset):
    body = {"data": to_records(dataset[1][FEATURES].head(1))}
    http = server.session()
    http.post(f"{server.base}/predict", json=body, timeout=30)
    timings = []
    for _ in range(5):
        started = time.monotonic()
        assert http.post(f"{server.base}/predict", json=body, timeout=30).status_code == 200
        timings.append(time.monotonic() - started)
    assert max(timings) < WAIT_MS / 1000 + 0.5  # within the bound plus model time
    assert sorted(timings)[2] < WAIT_MS / 1000 / 2  # and, being alone, it did not wait for the bound at all
