"""Migrations run once however many processes start together, and bring older schemas up to date, on a real
PostgreSQL and on the embedded SQLite file."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from app.auth.keys import KeyStore
from app.db import SCHEMA_REVISION, Database, current_revision, database_url, migrate, open_database, sqlite_file
from tests.support.answers import expected_answers
from tests.support.data import FEATURES, to_records
from tests.support.pgserver import postgres_server
from tests.support.servers import ROOT, gunicorn, wait_for_every_worker, wait_until

HEAD = "0004"
# The schema the SQLite-only server created by itself, before migrations existed.
PRE_MIGRATION_SQLITE = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, owner TEXT NOT NULL, scopes TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, last_used_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, source TEXT, detail TEXT);
"""


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


def settings_for(url: str) -> dict:
    return {"DATABASE_URL": url, "AUTH_DB": "", "DATABASE_TIMEOUT": 5}


def migrate_together(settings: dict, processes: int = 6) -> list[subprocess.CompletedProcess]:
    """processes interpreters that each open (and so migrate) the database at the same instant."""
    code = ("import sys, json; from app.db import open_database; "
            "open_database(json.loads(sys.argv[1])).dispose(); print('ok')")
    started = [subprocess.Popen([sys.executable, "-c", code, json.dumps(settings)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(processes)]
    return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in started]


def test_the_code_expects_the_newest_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from app.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION == HEAD


def test_processes_starting_together_on_an_empty_postgresql_database_all_succeed(postgres):
    url = postgres.create_database("together")
    runs = migrate_together(settings_for(url))
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr[-800:] for r in runs if r.returncode]
    assert postgres.execute("together", "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_processes_starting_together_on_a_new_sqlite_file_all_succeed(tmp_path):
    path = tmp_path / "var" / "agserve.sqlite3"
    runs = migrate_together({"DATABASE_URL": "", "AUTH_DB": str(path), "DATABASE_TIMEOUT": 5})
    assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr[-800:] for r in runs if r.returncode]
    assert sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_an_older_postgresql_schema_is_migrated_and_keeps_its_data(postgres):
    url = postgres.create_database("older")
    old = Database(database_url(settings_for(url)))
    migrate(old, "0001")  # keys and audit only, as a first release would have left it
    key, record = KeyStore(old).create("from-0001", ["predict"])
    KeyStore(old).audit("cli:ops", "key.create", record.id)
    old.dispose()
    assert postgres.execute("older", "SELECT version_num FROM alembic_version") == [("0001",)]

    current = open_database(settings_for(url))
    assert postgres.execute("older", "SELECT version_num FROM alembic_version") == [(HEAD,)]
    store = KeyStore(current)
    assert store.verify(key).owner == "from-0001"
    assert [e["action"] for e in store.audit_log()] == ["key.create"]
    assert postgres.execute("older", "SELECT count(*) FROM model_activation") == [(0,)]  # the new tables exist
    current.dispose()


def test_a_sqlite_file_from_before_migrations_is_adopted_with_its_keys(tmp_path):
    path = tmp_path / "agserve.sqlite3"
    key = "agk_0123456789ab_" + "k" * 43
    with sqlite3.connect(path) as connection:
        connection.executescript(PRE_MIGRATION_SQLITE)
        connection.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,?)", (
            "0123456789ab", hashlib.sha256(key.encode()).hexdigest(), "old", "predict", time.time(), None, None, None))
        connection.execute("INSERT INTO audit (at, actor, action, detail) VALUES (?, 'cli:ops', 'key.create', '{}')", (time.time(),))
    store = KeyStore(sqlite_file(path))
    assert store.verify(key).owner == "old"
    store.audit("cli:ops", "key.revoke", "0123456789ab")
    assert [(e["seq"], e["action"]) for e in store.audit_log()] == [(2, "key.revoke"), (1, "key.create")]
    assert sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


@pytest.fixture(params=["postgresql", "sqlite"])
def schema_at_0002(request, tmp_path):
    """A database left at 0002 (keys, audit, model activation) by the release before monitoring moved in."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        settings = settings_for(server.create_database("at0002"))
    else:
        settings = {"DATABASE_URL": "", "AUTH_DB": str(tmp_path / "agserve.sqlite3"), "DATABASE_TIMEOUT": 5}
    old = Database.from_settings(settings)
    migrate(old, "0002")
    yield old, settings
    old.dispose()


def test_a_schema_at_0002_gains_monitoring_and_the_default_model_and_keeps_its_data(schema_at_0002, tmp_path):
    from app.inference.activations import DatabaseActivations
    from app.monitoring.store import MonitorStore

    old, settings = schema_at_0002
    key, _ = KeyStore(old).create("from-0002", ["predict"])
    DatabaseActivations(old, tmp_path).activate("churn", "3")
    assert current_revision(old) == "0002"

    current = open_database(settings)
    assert current_revision(current) == HEAD
    assert KeyStore(current).verify(key).owner == "from-0002"
    assert DatabaseActivations(current, tmp_path).state("churn")["active"] == "3"
    store = MonitorStore(current, "r1")  # the new tables take additive counts
    for _ in range(2):
        store.add([(100, "churn", "2xx", 3, 5)], [("churn", "3", 100, "num", "b1", 7)], [])
    assert store.traffic(1000) == [("2xx", 3, 10)] and store.drift_cells("churn", "3", 1000) == {"num": {"b1": 14}}
    assert DatabaseActivations(current, tmp_path).default_model() is None
    current.dispose()


def test_models_default_json_is_imported_once_then_the_database_record_rules(tmp_path):
    from app.inference.activations import DatabaseActivations

    models = tmp_path / "models"
    models.mkdir()
    (models / "default.json").write_text(json.dumps({"default": "churn"}))
    activations = DatabaseActivations(sqlite_file(tmp_path / "agserve.sqlite3"), models)
    assert activations.default_model() == "churn"  # imported on first read
    (models / "default.json").write_text(json.dumps({"default": "stale"}))
    assert activations.default_model() == "churn"  # once: the file is not read again
    activations.set_default_model("fraud")
    assert activations.default_model() == "fraud"
    assert json.loads((models / "default.json").read_text()) == {"default": "stale"}  # and never written


@pytest.mark.server
def test_a_worker_replaced_while_another_process_holds_the_write_lock_boots_and_serves(repository_path, dataset,
                                                                                        in_process):
    """A worker's boot checks the schema's revision in a read, which on SQLite waits for no writer: it read it in a
    write transaction, so a worker replaced beside a process stalled in a write (here the test's connection, holding
    the write lock past AGSERVE_DATABASE_TIMEOUT) failed "database is locked" and gunicorn halted the whole server."""
    _, test = dataset
    frame = test[FEATURES].head(2)
    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_DATABASE_TIMEOUT="1") as server:
        holder = sqlite3.connect(server.auth_db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock, until the replacement has answered
        try:
            victim, survivor = server.worker_pids()
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while victim in server.worker_pids() or len(server.worker_pids()) < 2:
                assert server.process.poll() is None, "the server stopped"
                assert time.monotonic() < deadline, "the master did not replace the killed worker"
                time.sleep(0.1)
            replacement = next(pid for pid in server.worker_pids() if pid != survivor)
            with server.only_worker(replacement):
                ready = wait_until(f"{server.base}/health/ready", 60, server.process)
                answer = server.session().post(f"{server.base}/models/binary/predict",
                                               json={"data": to_records(frame)}, timeout=30)
            assert ready.json()["worker"]["pid"] == replacement
            assert answer.status_code == 200, answer.text[:300]
            body = answer.json()
            assert (body["predictions"], body["probabilities"]) == expected_answers(in_process["binary"], frame)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert server.process.poll() is None


@pytest.mark.server
def test_a_worker_recycled_while_postgresql_is_down_leaves_the_server_up_and_boots_once_it_is_back(
        postgres, repository_path, dataset, in_process, tmp_path):
    """A recycled worker's replacement that cannot reach the database exits as an ordinary failure and the master
    starts another: gunicorn's boot error would stop the master and the worker still serving with it."""
    _, test = dataset
    frame = test[FEATURES].head(2)
    url = postgres.create_database("recycled")
    database = Database(database_url({"DATABASE_URL": url}))
    migrate(database)
    key, _ = KeyStore(database).create("tests", ["predict"])
    database.dispose()  # no pooled connection of the test's left to meet the kill below
    log = tmp_path / "gunicorn.log"

    def predict(server) -> requests.Response:
        return requests.post(f"{server.base}/models/binary/predict", json={"data": to_records(frame)},
                             headers={"X-API-Key": key}, timeout=30)

    with gunicorn(repository_path, workers=2, AGSERVE_MODELS="binary", AGSERVE_DATABASE_URL=url,
                  AGSERVE_DATABASE_TIMEOUT="1", log_path=log) as server:
        recycled, survivor = server.worker_pids()
        for pid in (recycled, survivor):  # each worker has verified the key (kept while the database is away)
            with server.only_worker(pid):
                assert predict(server).status_code == 200
        postgres.kill()
        try:
            os.kill(recycled, signal.SIGTERM)  # as max_requests recycles it
            deadline = time.monotonic() + 60
            while log.read_bytes().count(b"cannot reach the database while starting") < 2:
                assert server.process.poll() is None, "the server stopped"
                assert time.monotonic() < deadline, "no replacement tried to start"
                time.sleep(0.2)
            with server.only_worker(survivor):
                assert predict(server).status_code == 200  # the surviving worker kept serving meanwhile
            assert server.process.poll() is None
        finally:
            postgres.start()
        wait_for_every_worker(server, 2, 60)
        replacement = next(pid for pid in server.worker_pids() if pid != survivor)
        with server.only_worker(replacement):
            answer = predict(server)
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        assert (body["predictions"], body["probabilities"]) == expected_answers(in_process["binary"], frame)
    assert b"Worker failed to boot" not in log.read_bytes()
