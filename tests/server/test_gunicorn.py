"""The original specification's contract through a real gunicorn with 2 workers on loopback, and how workers load models."""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from app.config import cpu_count
from app.workers import ConnectionShares
from tests.support.answers import SEED_KEYS, expected_answers
from tests.support.data import FEATURES, to_records
from tests.support.servers import ROOT, answer_on, eventually, gunicorn, wait_until

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(repository_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "gunicorn.log"
    # connections here are timed by the tests, not closed by age (the age tests below start their own servers)
    with gunicorn(repository_path, workers=2, AGSERVE_DEFAULT_MODEL="multiclass", AGSERVE_MAX_CONNECTION_AGE="0",
                  log_path=log) as running:
        yield running


def test_seed_request_through_gunicorn(server, in_process, dataset):
    base, http = server.base, server.session()
    _, test = dataset
    frame = test[FEATURES]

    response = http.post(f"{base}/predict", json={"data": to_records(frame)}, timeout=30)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SEED_KEYS
    predictions, probabilities = expected_answers(in_process["multiclass"], frame)
    assert body["predictions"] == predictions and body["probabilities"] == probabilities
    assert body["model_info"]["name"] == "multiclass"
    assert response.headers["X-Request-ID"] == body["request_id"]


@pytest.mark.parametrize("name", ["binary", "regression", "quantile"])
def test_named_models_through_gunicorn(server, in_process, dataset, name):
    base, http = server.base, server.session()
    _, test = dataset
    frame = test[FEATURES].head(25)
    body = http.post(f"{base}/models/{name}/predict", json={"data": to_records(frame)}, timeout=30).json()
    assert (body["predictions"], body["probabilities"]) == expected_answers(in_process[name], frame)


def test_concurrent_requests_each_get_their_own_rows(server, in_process, dataset):
    base = server.base
    _, test = dataset
    frame = test[FEATURES]

    def ask(i):
        rows = frame.iloc[i:i + 3]
        body = requests.post(f"{base}/models/binary/predict", json={"data": to_records(rows)},
                             headers={"X-API-Key": server.key}, timeout=30).json()
        return body["probabilities"] == expected_answers(in_process["binary"], rows)[1]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(ask, range(0, 60)))


TCP_INFO_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info (since 4.6)


def _data_segments_in(sock: socket.socket) -> int:
    """Segments carrying data this socket has received (pure ACKs are not counted)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, TCP_INFO_DATA_SEGS_IN)[0]


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK and TCP_INFO are Linux's")
def test_an_answer_leaves_in_one_segment_and_is_whole(server, in_process, dataset):
    """Status line, headers and body in one TCP segment (one wake-up of the client, not two), on a kept-alive
    connection, and the answers are AutoGluon's own."""
    _, test = dataset
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for i in range(5):
            rows = test[FEATURES].iloc[i:i + 1]
            payload = json.dumps({"data": to_records(rows)}).encode()
            request = (f"POST /models/binary/predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {server.key}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
            before = _data_segments_in(sock)
            head, body = answer_on(sock, request)
            assert head.startswith(b"HTTP/1.1 200") and b"keep-alive" in head.lower()
            assert _data_segments_in(sock) - before == 1
            answer = json.loads(body)
            assert (answer["predictions"], answer["probabilities"]) == expected_answers(in_process["binary"], rows)


def _threads_of(pid: int) -> dict[int, tuple[float, int]]:
    """Each thread's CPU seconds (schedstat's nanoseconds: stat's 10 ms ticks were too coarse for a 2 s run) and
    voluntary context switches, from /proc."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            schedstat, status = (task / "schedstat").read_text(), (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        switches = next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))
        threads[int(task.name)] = (int(schedstat.split()[0]) / 1e9, int(switches))
    return threads


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread counters are Linux's")
def test_back_to_back_requests_on_a_kept_alive_connection_stay_on_one_thread(server, in_process, dataset):
    """A client that sends its next request as soon as it has an answer is served by the same thread, without the
    worker's poller: the worker's main thread is not woken for each request, and one thread does the work."""
    _, test = dataset
    host, port = server.base.removeprefix("http://").split(":")
    rows = test[FEATURES].iloc[:1]
    payload = json.dumps({"data": to_records(rows)}).encode()
    request = (f"POST /models/binary/predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {server.key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    workers = [child.pid for child in psutil.Process(server.process.pid).children()]
    requests_sent = 400
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        answer_on(sock, request)  # the connection is now kept alive by one worker
        before = {pid: _threads_of(pid) for pid in workers}
        for _ in range(requests_sent):
            head, body = answer_on(sock, request)
            assert head.startswith(b"HTTP/1.1 200")
        after = {pid: _threads_of(pid) for pid in workers}
    assert json.loads(body)["predictions"] == expected_answers(in_process["binary"], rows)[0]
    cpu = {pid: {tid: after[pid][tid][0] - before[pid].get(tid, (0, 0))[0] for tid in after[pid]} for pid in workers}
    pid = max(workers, key=lambda p: sum(cpu[p].values()))  # the worker that served the connection
    main_woken = after[pid][pid][1] - before[pid][pid][1]
    assert main_woken < requests_sent / 3, f"the poller's thread was woken {main_woken} times for {requests_sent}"
    request_threads = sorted((seconds for tid, seconds in cpu[pid].items() if tid != pid), reverse=True)
    assert request_threads[0] >= 0.7 * sum(request_threads), f"the work spread over threads: {request_threads[:5]}"


BUSY_CLIENT = r"""
import socket, sys, time
from tests.support.servers import answer_on
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
request = f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
sock, answered, slowest = socket.create_connection((host, port), timeout=30), 0, 0.0
end = time.monotonic() + seconds
while time.monotonic() < end:
    started = time.monotonic()
    answer_on(sock, request)
    answered, slowest = answered + 1, max(slowest, time.monotonic() - started)
print(answered, slowest)
"""


def test_busy_kept_alive_clients_beyond_the_threads_are_served_in_turn(repository_path):
    """More clients than threads, each sending its next request as soon as it has an answer: a thread does not keep
    serving its own client while others wait for a thread, so every client is answered, none waits long."""
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS="binary", AGSERVE_THREADS="2") as server:
        host, port = server.base.removeprefix("http://").split(":")
        clients = [subprocess.Popen([sys.executable, "-c", BUSY_CLIENT, host, port, "3"], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True) for _ in range(6)]
        results = [client.communicate(timeout=60)[0].split() for client in clients]
    answered, slowest = [int(r[0]) for r in results], [float(r[1]) for r in results]
    assert min(answered) >= 0.4 * max(answered), f"answers per client: {answered}"
    assert max(slowest) < 1.0, f"slowest answer per client (s): {slowest}"


def test_seed_health_check(server):
    base, http = server.base, server.session()
    body = http.get(f"{base}/health", timeout=5).json()
    assert body["status"] == "healthy" and body["model_loaded"] is True
    assert body["model_info"]["name"] == "multiclass"
    assert http.get(f"{base}/health/live", timeout=5).json() == {"status": "alive"}


def test_errors_keep_their_shape_through_gunicorn(server):
    base, http = server.base, server.session()
    response = http.post(f"{base}/predict", data=b'{"data": [', headers={"Content-Type": "application/json"},
                             timeout=5)
    assert response.status_code == 400 and set(response.json()) == {"error", "details", "request_id"}
    assert http.post(f"{base}/predict", data="x", headers={"Content-Type": "text/plain; charset=utf-8"},
                         timeout=5).status_code == 415


def _maps_lightgbm(process: psutil.Process) -> bool:
    return any("lib_lightgbm" in m.path for m in process.memory_maps())


def test_each_worker_loads_models_after_the_fork_and_the_master_never_does(server):
    process = server.process
    master = psutil.Process(process.pid)
    workers = master.children()
    assert len(workers) == 2
    assert all(_maps_lightgbm(worker) for worker in workers)
    assert not _maps_lightgbm(master)


def test_math_threads_are_capped_per_worker(server):
    base, http = server.base, server.session()
    expected = max(1, cpu_count() // 2)
    pools = http.get(f"{base}/health/ready", timeout=5).json()["worker"]["thread_pools"]
    assert {p["library"] for p in pools} >= {"openmp"}
    assert all(p["threads"] == expected for p in pools)


def test_a_worker_that_cannot_load_stays_up_and_says_why(repository_path, tmp_path):
    broken = tmp_path / "models"
    shutil.copytree(repository_path, broken)
    (broken / "binary" / "1" / "predictor" / "predictor.pkl").write_bytes(b"corrupt")
    with gunicorn(broken, workers=2, wait_ready=False, AGSERVE_MODELS="binary") as running:
        base, process, http = running.base, running.process, running.session()
        wait_until(f"{base}/health/live", 60, process)
        ready = http.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 503
        assert "integrity check (changed: predictor.pkl)" in ready.json()["reason"]
        refused = http.post(f"{base}/predict", json={"data": [{}]}, timeout=5)
        assert refused.status_code == 503 and set(refused.json()) == {"error", "details", "request_id"}
        assert process.poll() is None, "the master must keep running"


KEPT_ALIVE_CLIENT = r"""
import json, os, socket, sys, time
from tests.support.servers import answer_on
host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
request = f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
lifetimes, answered, closed_under_us, end = [], 0, 0, time.monotonic() + 120
while time.monotonic() < end and not os.path.exists(stop):
    sock, opened = socket.create_connection((host, port), timeout=30), time.monotonic()
    while time.monotonic() < end and not os.path.exists(stop):
        try:
            head, _ = answer_on(sock, request)
        except (ConnectionError, AttributeError):  # closed by a stopping worker while idle: send again elsewhere
            closed_under_us += 1
            break
        assert head.startswith(b"HTTP/1.1 200"), head
        answered += 1
        time.sleep(0.005)
        if b"\r\nconnection: close" in head.lower():
            lifetimes.append(time.monotonic() - opened)
            break
    sock.close()
print(json.dumps({"answered": answered, "lifetimes": lifetimes, "closed_under_us": closed_under_us}))
"""


def _connections_per_worker(server, port: int, clients: set[int] | None = None) -> dict[int, int]:
    """Each worker's open connections on the server's port (only from these client ports, when given)."""
    counts = {}
    for pid in server.worker_pids():
        try:
            counts[pid] = sum(1 for c in psutil.Process(pid).net_connections("tcp")
                              if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                              and (clients is None or c.raddr.port in clients))
        except psutil.Error:  # exited meanwhile
            pass
    return counts


def test_kept_alive_clients_spread_back_over_a_replaced_worker(repository_path, tmp_path):
    """A kept-alive connection stays with the worker that accepted it: when a worker is replaced its clients
    reconnect to the other, and stayed there (one worker of two served everything). Connections are closed after
    AGSERVE_MAX_CONNECTION_AGE, and a worker above its share stops accepting, so the replacement gets its half."""
    clients, age, stop = 12, 1.0, tmp_path / "stop"
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_MAX_REQUESTS="0",
                  AGSERVE_MAX_CONNECTION_AGE=str(age)) as server:
        host, port = server.base.removeprefix("http://").split(":")
        running = [subprocess.Popen([sys.executable, "-c", KEPT_ALIVE_CLIENT, host, port, str(stop)], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True) for _ in range(clients)]
        try:
            time.sleep(2)
            survivor, replaced = server.worker_pids()
            os.kill(replaced, 15)  # gunicorn replaces it, as after max_requests
            assert eventually(lambda: len(set(server.worker_pids()) - {survivor}) == 1
                              and replaced not in server.worker_pids(), 30)
            replacement = (set(server.worker_pids()) - {survivor}).pop()
            assert eventually(lambda: _connections_per_worker(server, int(port)).get(replacement, 0) > 0, 30)
            time.sleep(3 * age)  # every connection has been closed by age since the replacement accepted
            samples = []
            for _ in range(10):
                samples.append(_connections_per_worker(server, int(port)))
                time.sleep(0.1)
        finally:
            stop.touch()
            results = [json.loads(client.communicate(timeout=60)[0]) for client in running]
    shares = [sample.get(replacement, 0) / max(1, sum(sample.values())) for sample in samples]
    assert min(shares) >= 0.25, f"the replacement's share of the connections: {shares} ({samples})"
    lifetimes = [life for result in results for life in result["lifetimes"]]
    cut_short = [life for life in lifetimes if life < 0.9 * age]  # by the stopping worker: once a client at most
    assert len(lifetimes) >= 5 * clients and len(cut_short) <= clients, lifetimes
    assert max(lifetimes) <= 3 * age, lifetimes  # closed by age (±10 %), whatever a request waits while a worker loads
    assert all(result["answered"] > 0 for result in results)


def test_a_worker_above_its_share_of_connections_leaves_new_ones_to_the_other_unless_it_is_stalled(repository_path):
    """While one worker is stopped the other takes every connection (the stopped one's count goes stale), waiting at
    most ConnectionShares.FRESH for it; once both run, the one above its share of open connections stops accepting,
    so the next ones go to the other until they hold half each (two idle workers racing for them split at random).
    Connections a worker refused with a 408 before must not count against its share."""
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_MAX_CONNECTION_AGE="0",
                  AGSERVE_HEADER_TIMEOUT="0.5") as server:
        host, port = server.base.removeprefix("http://").split(":")
        request = f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        first, second = server.worker_pids()
        with server.only_worker(first):  # connections it closes with a 408 count as closed once, not twice
            time.sleep(ConnectionShares.FRESH + 0.2)  # the stopped one no longer counts: the first takes them all
            late = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
            for sock in late:
                sock.sendall(request[:10])
            time.sleep(0.7)
            for sock in late:
                sock.sendall(request[10:12])  # headers still not complete, past AGSERVE_HEADER_TIMEOUT
            answers = [sock.recv(4096) for sock in late]
            assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
            for sock in late:
                sock.close()
        sockets, waits = [], []

        def connect() -> None:
            started = time.monotonic()
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
            assert answer_on(sockets[-1], request)[0].startswith(b"HTTP/1.1 200")
            waits.append(time.monotonic() - started)
            time.sleep(0.05)  # the accepting worker has counted it before the next one arrives

        def opened() -> dict[int, int]:  # ours only (readiness checks may still be closing theirs)
            return _connections_per_worker(server, int(port), {sock.getsockname()[1] for sock in sockets})

        try:
            with server.only_worker(first):
                for _ in range(8):
                    connect()
            stalled = opened()
            time.sleep(0.3)  # the second's loop has turned since it was continued (gunicorn closes idle ones after 5 s)
            for _ in range(8):
                connect()
            counts = opened()
        finally:
            for sock in sockets:
                sock.close()
    assert stalled == {first: 8, second: 0} and max(waits) < 2 * ConnectionShares.FRESH, (stalled, waits)
    assert counts[first] + counts[second] == 16 and counts[second] >= 7, counts
