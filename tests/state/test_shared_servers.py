"""Rate limits and keys shared by workers and replicas, and Redis outages, through real gunicorn servers and a real
redis-server on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.redisserver import redis_server
from tests.support.servers import eventually, gunicorn

BODY = {"data": to_records(mixed_frame(n=1, seed=81)[FEATURES])}


def send_pinned(server, key: str, count: int) -> list[requests.Response]:
    """count requests with key through each worker of server in turn (a fresh connection per worker)."""
    answers = []
    for pid in server.worker_pids():
        with server.only_worker(pid), requests.Session() as session:
            session.headers["X-API-Key"] = key
            answers += [session.post(f"{server.base}/models/binary/predict", json=BODY, timeout=10)
                        for _ in range(count)]
    return answers


def assert_admitted_exactly(answers, limit: int, window: int) -> None:
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == limit and statuses.count(429) == len(answers) - limit, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert 1 <= int(refused.headers["Retry-After"]) <= window
        body = refused.json()
        assert set(body) == {"error", "details", "request_id"} and body["details"]["limit"] == limit


def test_embedded_rate_limit_admits_exactly_n_across_both_workers(repository_path):
    with gunicorn(repository_path, AGSERVE_RATE_LIMIT_PREDICT="10/minute") as server:
        assert_admitted_exactly(send_pinned(server, server.key, 12), 10, 60)
        # Per credential, not per address: another key from the same client has its own budget.
        other = server.session().post(f"{server.base}/admin/keys", json={"owner": "b", "scopes": ["predict"]}).json()
        assert send_pinned(server, other["key"], 1)[0].status_code == 200


def metric(server, name: str, **labels) -> float:
    text = server.session().get(f"{server.base}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_two_replicas_share_rate_limits_through_redis_and_keys_through_the_database(repository_path, tmp_path):
    shared_db = tmp_path / "fleet.sqlite3"  # two replicas on one machine: one embedded database
    with redis_server() as redis, \
            gunicorn(repository_path, auth_db=shared_db, AGSERVE_REDIS_URL=redis.url,
                     AGSERVE_RATE_LIMIT_PREDICT="12/minute") as a, \
            gunicorn(repository_path, auth_db=shared_db, AGSERVE_REDIS_URL=redis.url,
                     AGSERVE_RATE_LIMIT_PREDICT="12/minute") as b:
        created = a.session().post(f"{a.base}/admin/keys", json={"owner": "shared", "scopes": ["predict"]}).json()
        key = created["key"]
        # Five requests through each of the four workers: twelve admitted in all.
        answers = send_pinned(a, key, 5) + send_pinned(b, key, 5)
        assert_admitted_exactly(answers, 12, 60)

        fresh = b.session().post(f"{b.base}/admin/keys", json={"owner": "fresh", "scopes": ["predict"]}).json()
        assert send_pinned(a, fresh["key"], 1)[0].status_code == 200  # created on b, honoured by a
        revoked = b.session().delete(f"{b.base}/admin/keys/{fresh['id']}")
        assert revoked.status_code == 200
        started = time.monotonic()
        assert eventually(lambda: all(r.status_code == 401 for r in send_pinned(a, fresh["key"], 1)), 1.0)
        assert time.monotonic() - started < 1.0
        redis.client().flushall()  # Redis never held the key: losing it changes nothing
        assert all(r.status_code == 401 for r in send_pinned(a, fresh["key"], 1) + send_pinned(b, fresh["key"], 1))


def test_redis_killed_under_load_fails_no_prediction_and_caching_resumes(repository_path, tmp_path):
    with redis_server() as redis, gunicorn(repository_path, AGSERVE_REDIS_URL=redis.url) as server:
        out = tmp_path / "load.jsonl"
        load = subprocess.Popen([sys.executable, "-m", "tests.support.loadgen", f"{server.base}/models/binary/predict",
                                 server.key, "8", "4", "60", str(out), json.dumps(BODY)])
        time.sleep(2.5)
        assert redis.client().keys("agserve:cache:*")  # the load's row is cached in Redis
        redis.kill()
        time.sleep(1.5)
        ready = requests.get(f"{server.base}/health/ready", timeout=5)
        assert ready.status_code == 200  # health stays ready without Redis
        assert metric(server, "agserve_redis_up") == 0
        assert load.wait(60) == 0
        results = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(results) > 200 and all(r["status"] == 200 for r in results), \
            [r for r in results if r["status"] != 200][:5]

        redis.start()  # an empty Redis on the same port; the server is not restarted
        hits = metric(server, "agserve_cache_rows_total", result="hit")

        def cached_again():
            send_pinned(server, server.key, 2)
            return metric(server, "agserve_cache_rows_total", result="hit") > hits
        assert eventually(cached_again, 15, step=0.5)
        assert redis.client().keys("agserve:cache:*")

        def every_worker_reaches_redis():
            send_pinned(server, server.key, 1)  # a worker's gauge moves when it next calls Redis, not by itself
            return metric(server, "agserve_redis_up") == 1
        assert eventually(every_worker_reaches_redis, 10, step=0.5)
