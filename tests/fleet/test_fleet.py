"""One fleet, one truth: three gunicorn replicas, a real PostgreSQL and a real Redis (see conftest.py).

Keys, revocations, the audit log and model activation live in PostgreSQL; Redis holds only the prediction cache and
rate limits, so losing, flushing or tampering with it never grants anything.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests

from app.db import SCHEMA_REVISION
from tests.support.answers import expected_answers
from tests.support.data import FEATURES, to_records
from tests.support.fleet import RELOAD_INTERVAL, every_worker
from tests.support.servers import ROOT, eventually

pytestmark = pytest.mark.server


def statuses(fleet, key: str, row) -> dict[str, list[int]]:
    """The status of one prediction with key, through every worker of every replica."""
    def ask(replica, session):
        session.headers["X-API-Key"] = key
        return session.post(f"{replica.base}/models/binary/predict", json={"data": [row]}, timeout=10).status_code
    return every_worker(fleet, ask)


def refused_everywhere(fleet, key: str, row) -> bool:
    return all(codes and set(codes) == {401} for codes in statuses(fleet, key, row).values())


@pytest.fixture(scope="module")
def row(dataset):
    return to_records(dataset[1][FEATURES].head(1))[0]


def test_three_replicas_started_together_on_an_empty_database_all_came_up(fleet):
    assert fleet.postgres.execute("agserve", "SELECT version_num FROM alembic_version") == [(SCHEMA_REVISION,)]
    for replica in fleet.all:
        assert requests.get(f"{replica.base}/health/ready", timeout=5).status_code == 200
    # The model folder's state.json was adopted once, not once per replica.
    events = fleet.postgres.execute("agserve", "SELECT action, version FROM model_events WHERE name = 'binary'")
    assert events == [("adopt", "1")]
    # So was models/default.json: the default model is now a row every replica reads.
    assert fleet.postgres.execute("agserve", "SELECT name FROM default_model") == [("binary",)]


def test_a_revoked_key_never_comes_back(fleet, row):
    """Create on B, revoke on A, restart Redis, FLUSHALL, HUP every replica, restart one: refused at every step."""
    a, b, c = fleet.all
    created = b.session().post(f"{b.base}/admin/keys", json={"owner": "doomed", "scopes": ["predict"]}, timeout=10)
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["id"]
    assert statuses(fleet, key, row) == {"a": [200, 200], "b": [200, 200], "c": [200, 200]}

    assert a.session().delete(f"{a.base}/admin/keys/{key_id}", timeout=10).status_code == 200
    revoked_at = time.monotonic()
    assert eventually(lambda: refused_everywhere(fleet, key, row), 1.0, step=0.02)
    assert time.monotonic() - revoked_at < 1.5  # within 1 s, plus the time the six pinned requests take

    fleet.redis.kill()
    assert refused_everywhere(fleet, key, row), "Redis gone"
    fleet.redis.start()
    assert refused_everywhere(fleet, key, row), "Redis restarted empty"
    fleet.redis.client().flushall()
    assert refused_everywhere(fleet, key, row), "Redis flushed"
    for replica in fleet.all:
        replica.recycle_workers()
    assert refused_everywhere(fleet, key, row), "every worker recycled"
    c.restart()
    assert refused_everywhere(fleet, key, row), "a replica restarted"
    revocations = fleet.postgres.execute("agserve", "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = %s", key_id)
    assert revocations == [(True,)]


def test_writing_to_redis_grants_nothing_and_a_poisoned_cache_entry_is_never_served(fleet, row, dataset, in_process):
    a, b, c = fleet.all
    narrow = a.session().post(f"{a.base}/admin/keys", json={"owner": "narrow", "scopes": ["predict"]}).json()
    revoked = a.session().post(f"{a.base}/admin/keys", json={"owner": "gone", "scopes": ["predict", "admin"]}).json()
    assert a.session().delete(f"{a.base}/admin/keys/{revoked['id']}").status_code == 200
    client = fleet.redis.client()
    for record in (narrow, revoked):  # what an attacker with Redis access would try, in every shape the old code read
        client.hset(f"agserve:key:{record['id']}", mapping={
            "id": record["id"], "scopes": "admin metrics model_info predict", "revoked_at": "", "owner": "x"})
    time.sleep(1.0)
    for replica in fleet.all:
        assert replica.session(narrow["key"]).get(f"{replica.base}/admin/keys", timeout=10).status_code == 403
        assert replica.session(revoked["key"]).get(f"{replica.base}/admin/keys", timeout=10).status_code == 401
        assert replica.session(revoked["key"]).post(f"{replica.base}/models/binary/predict",
                                                    json={"data": [row]}, timeout=10).status_code == 401

    # Two rows cached (signed) through A; then their entries are swapped, and a third is planted unsigned.
    rows = dataset[1][FEATURES].iloc[[3, 4]]
    client.flushall()
    for record in to_records(rows):
        assert a.session().post(f"{a.base}/models/binary/predict", json={"data": [record]}).status_code == 200
    entries = sorted(client.keys("agserve:cache:*"))
    assert len(entries) == 2
    first, second = client.get(entries[0]), client.get(entries[1])
    client.set(entries[0], second)
    client.set(entries[1], first)
    expected = expected_answers(in_process["binary"], rows)[0]
    for replica in fleet.all:
        answers = [replica.session().post(f"{replica.base}/models/binary/predict", json={"data": [record]})
                   .json()["predictions"][0] for record in to_records(rows)]
        assert answers == expected
    for name in client.keys("agserve:cache:*"):  # plain JSON of the wrong answer, as the old cache stored it
        client.set(name, json.dumps({"prediction": "forged"}))
    for replica in fleet.all:
        body = replica.session().post(f"{replica.base}/models/binary/predict", json={"data": to_records(rows)}).json()
        assert body["predictions"] == expected


def test_revoke_during_a_redis_outage_is_effective_everywhere(fleet, row):
    a, _, _ = fleet.all
    created = a.session().post(f"{a.base}/admin/keys", json={"owner": "outage", "scopes": ["predict"]}).json()
    assert statuses(fleet, created["key"], row) == {"a": [200, 200], "b": [200, 200], "c": [200, 200]}
    fleet.redis.kill()
    try:
        revoked = a.session().delete(f"{a.base}/admin/keys/{created['id']}", timeout=10)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert eventually(lambda: refused_everywhere(fleet, created["key"], row), 1.0, step=0.02)
    finally:
        fleet.redis.start()
    assert refused_everywhere(fleet, created["key"], row)


def start_load(replica, key: str, out, row, seconds: float, threads: int = 3, rate: int = 30):
    return subprocess.Popen([sys.executable, "-m", "tests.support.loadgen", f"{replica.base}/models/binary/predict", key,
                             str(seconds), str(threads), str(rate), str(out), json.dumps({"data": [row]})], cwd=ROOT)


def read_load(out) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def test_promote_and_rollback_through_one_replica_reach_all_three_under_load(fleet, row, tmp_path):
    a, _, _ = fleet.all
    seconds, switch = 22, RELOAD_INTERVAL + 4.0  # the reload interval, plus loading the version beside the old one
    loads = {r.name: (start_load(r, r.key, tmp_path / f"{r.name}.jsonl", row, seconds), tmp_path / f"{r.name}.jsonl")
             for r in fleet.all}
    time.sleep(3)
    promoted = a.session().post(f"{a.base}/admin/models/binary/promote", json={"version": "2"}, timeout=10)
    promoted_at = time.time()
    assert promoted.status_code == 200, promoted.text

    def fleet_serves(version):
        body = a.session().get(f"{a.base}/admin/models/binary/versions", timeout=10).json()
        serving = {(r["replica"], r["worker"]): r["version"] for r in body["replicas"]}
        return len(serving) >= 6 and set(serving.values()) == {version} and \
            {replica for replica, _ in serving} == {"a", "b", "c"}
    assert eventually(lambda: fleet_serves("2"), switch)
    time.sleep(switch)
    rolled = a.session().post(f"{a.base}/admin/models/binary/rollback", timeout=10)
    rolled_at = time.time()
    assert rolled.status_code == 200 and rolled.json()["active"] == "1"
    assert eventually(lambda: fleet_serves("1"), switch)
    for process, _ in loads.values():
        assert process.wait(seconds + 30) == 0

    for name, (_, out) in loads.items():
        responses = read_load(out)
        assert len(responses) > 200
        assert {r["status"] for r in responses} == {200}, (name, [r for r in responses if r["status"] != 200][:5])
        after_promote = {r["version"] for r in responses if promoted_at + switch <= r["t"] < rolled_at}
        after_rollback = {r["version"] for r in responses if r["t"] >= rolled_at + switch}
        assert after_promote == {"2"} and after_rollback == {"1"}, name
    events = a.session().get(f"{a.base}/admin/models/binary/versions").json()["events"]
    assert [(e["action"], e["version"]) for e in events[:2]] == [("rollback", "1"), ("promote", "2")]


def test_a_version_that_fails_to_load_is_visible_fleet_wide(fleet, read_only_models, row):
    """A corrupt version force-promoted through A: every worker of every replica keeps serving 1 and says why."""
    a, b, c = fleet.all
    source = read_only_models.parent / "source"  # the writable side of the read-only mount
    shutil.copytree(source / "binary" / "1", source / "binary" / "3")
    with open(source / "binary" / "3" / "predictor" / "learner.pkl", "ab") as handle:
        handle.write(b"corrupt")
    forced = a.session().post(f"{a.base}/admin/models/binary/promote", json={"version": "3", "force": True})
    assert forced.status_code == 200

    def reported():  # asked through C: what every worker of every replica wrote to the database
        return c.session().get(f"{c.base}/admin/models/binary/versions", timeout=10).json()["replicas"]
    assert eventually(lambda: len(reported()) == 6 and all(r["failed_version"] == "3" for r in reported()), 15,
                      step=0.3), reported()
    replicas = reported()
    assert {r["replica"] for r in replicas} == {"a", "b", "c"}
    assert all(r["version"] == "1" and r["status"] == "ready" for r in replicas)
    assert all("integrity check (changed: learner.pkl)" in r["error"] for r in replicas)
    assert statuses(fleet, fleet.all[0].key, row) == {"a": [200, 200], "b": [200, 200], "c": [200, 200]}
    assert b.session().post(f"{b.base}/admin/models/binary/rollback").json()["active"] == "1"


def test_postgres_killed_under_load(fleet, row, tmp_path):
    """Keys verified before keep answering; unknown keys get 503; admin writes fail loudly; all recovers by itself."""
    a, b, _ = fleet.all
    unused = a.session().post(f"{a.base}/admin/keys", json={"owner": "unused", "scopes": ["predict"]}).json()
    audit_before = a.session().get(f"{a.base}/admin/audit?limit=1000").json()["entries"]
    keys_before = {k["id"]: k["revoked_at"] for k in a.session().get(f"{a.base}/admin/keys").json()["keys"]}
    assert statuses(fleet, a.key, row) == {"a": [200, 200], "b": [200, 200], "c": [200, 200]}  # every worker saw it

    seconds = 14
    loads = {r.name: (start_load(r, r.key, tmp_path / f"{r.name}.jsonl", row, seconds), tmp_path / f"{r.name}.jsonl")
             for r in fleet.all}
    time.sleep(2)
    fleet.postgres.kill()
    killed_at = time.time()
    try:
        time.sleep(2)  # past AGSERVE_KEY_CACHE_SECONDS: every verification now meets the dead database
        for replica in fleet.all:
            unknown = replica.session(unused["key"]).post(f"{replica.base}/models/binary/predict",
                                                          json={"data": [row]}, timeout=15)
            assert unknown.status_code == 503 and unknown.headers["Retry-After"] == "1", unknown.text
            assert set(unknown.json()) == {"error", "details", "request_id"}
        refused = b.session().delete(f"{b.base}/admin/keys/{unused['id']}", timeout=15)
        assert refused.status_code == 503  # a revocation is never silently dropped
        time.sleep(2)
    finally:
        fleet.postgres.start()
    restarted_at = time.time()
    for process, _ in loads.values():
        assert process.wait(seconds + 30) == 0
    for name, (_, out) in loads.items():
        responses = read_load(out)
        during = [r for r in responses if killed_at <= r["t"] <= restarted_at]
        assert len(during) > 50, name
        assert {r["status"] for r in responses} == {200}, (name, [r for r in responses if r["status"] != 200][:5])

    assert eventually(lambda: all(r.session(unused["key"]).post(f"{r.base}/models/binary/predict",
                                                                json={"data": [row]}, timeout=10).status_code == 200
                                  for r in fleet.all), 15, step=0.5)
    audit_after = a.session().get(f"{a.base}/admin/audit?limit=1000").json()["entries"]
    assert audit_after[-len(audit_before):] == audit_before  # nothing written before the kill was lost
    keys_after = {k["id"]: k["revoked_at"] for k in a.session().get(f"{a.base}/admin/keys").json()["keys"]}
    assert keys_after == keys_before
    assert a.session().delete(f"{a.base}/admin/keys/{unused['id']}").status_code == 200  # writes work again
