"""A fleet: a real PostgreSQL, a real redis-server and THREE gunicorn replicas (a, b, c), each with its own var/
folder, all serving one model folder that is a read-only bind mount (root ignores file modes, not mount flags), and
sending their alerts to one real webhook receiver. One fleet serves every test module of this package."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.config import load_settings
from app.lifecycle.validation import validate
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES, mixed_frame
from tests.support.fleet import ALERT_INTERVAL, RELOAD_INTERVAL
from tests.support.pgserver import postgres_server
from tests.support.receivers import webhook_receiver
from tests.support.redisserver import redis_server
from tests.support.servers import BIN, ROOT, Server, free_port, server_env, stop, wait_for_every_worker, wait_until

WORKERS = 2
CACHE_SECRET = "fleet-cache-secret-shared-by-every-replica"
SERVED = "binary,multiclass,drift"  # more than one, so that POST /predict answers with the recorded default
ALERT_RULES = """
[channels.webhook]
url = "{url}"

[[rules]]
name = "unseen-colours"
metric = "drift_unseen_share"
model = "drift"
above = 0.1
cooldown_seconds = 3600

[[rules]]
name = "missing-counts"
metric = "drift_null_share_change"
model = "drift"
above = 0.1
cooldown_seconds = 3600
"""


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path):
    """target shows source read-only, for root too; unmounted afterwards."""
    assert os.geteuid() == 0, "the fleet tests mount the model folder read-only and need root"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        probe = target / "probe"
        with pytest.raises(OSError):  # the mount really is read-only
            probe.write_text("x")
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.fixture(scope="package")
def read_only_models(tmp_path_factory, repository_path, predictor_dirs, dataset):
    """binary v1 active (state.json, adopted by the database on first sight), v2 imported and validated; drift: the
    binary predictor with a large reference sample (sharp statistics); default.json names binary."""
    from app.inference import ModelRepository

    root = tmp_path_factory.mktemp("fleet-models")
    source = root / "source"
    shutil.copytree(repository_path, source)
    ModelRepository(source).import_predictor(predictor_dirs["binary"], "drift",
                                             reference=mixed_frame(n=3000, seed=100)[FEATURES])
    ModelRepository(source).activate("drift", "1")
    second = ModelRepository(source).import_predictor(predictor_dirs["binary"], "binary")
    settings = load_settings(environ={}, overrides={"ENV": "testing"})
    assert validate(second, dataset[1][FEATURES + [PROBLEMS["binary"][0]]], settings).passed
    with read_only_mount(source, root / "models") as models:
        yield models


@dataclass
class Replica:
    name: str
    env: dict[str, str]
    var: Path
    key: str
    server: Server | None = None

    @property
    def base(self) -> str:
        return self.server.base

    def start(self) -> None:
        port = free_port()
        self.env["AGSERVE_BIND"] = f"127.0.0.1:{port}"
        log = open(self.var / "server.log", "ab")
        process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.server = Server(f"http://127.0.0.1:{port}", process, self.key, self.var / "agserve.sqlite3")

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(f"{self.base}/health/ready", timeout, self.server.process)
        wait_for_every_worker(self.server, WORKERS, timeout)

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server.process)

    def kill(self) -> None:
        """SIGKILL to the master and every worker at once, as when a pod's node dies: nothing gets to clean up."""
        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    def recycle_workers(self, timeout: float = 120) -> None:
        """SIGHUP: gunicorn replaces every worker; return once all the new ones answer."""
        old = set(self.server.worker_pids())
        os.kill(self.server.process.pid, 1)
        deadline = time.monotonic() + timeout
        while set(self.server.worker_pids()) & old or len(self.server.worker_pids()) < WORKERS:
            assert time.monotonic() < deadline, f"replica {self.name}: workers were not replaced"
            time.sleep(0.1)
        wait_for_every_worker(self.server, WORKERS, timeout)

    def session(self, key: str | None = None):
        session = self.server.session()
        if key is not None:
            session.headers["X-API-Key"] = key
        return session


@dataclass
class Fleet:
    postgres: object
    redis: object
    database_url: str
    replicas: dict[str, Replica] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def all(self) -> list[Replica]:
        return [self.replicas[name] for name in sorted(self.replicas)]


@pytest.fixture(scope="package")
def alert_hook():
    """The webhook every replica sends its alerts to: each post is one alert sent."""
    with webhook_receiver() as hook:
        yield hook


@pytest.fixture(scope="package")
def fleet(tmp_path_factory, read_only_models, alert_hook):
    """Three replicas started at the same instant against an empty PostgreSQL database."""
    from app.auth.keys import KeyStore
    from app.db import Database, database_url

    root = tmp_path_factory.mktemp("fleet")
    rules = root / "alerts.toml"
    rules.write_text(ALERT_RULES.format(url=alert_hook.url))
    with postgres_server() as postgres, redis_server() as redis:
        url = postgres.create_database("agserve")
        fleet = Fleet(postgres, redis, url)
        for name in ("a", "b", "c"):
            var = root / name / "var"
            var.mkdir(parents=True)
            env = server_env(AGSERVE_DATABASE_URL=url, AGSERVE_REDIS_URL=redis.url,
                             AGSERVE_MODEL_REPOSITORY=str(read_only_models), AGSERVE_MODELS=SERVED,
                             AGSERVE_AUTH_DB=str(var / "agserve.sqlite3"), AGSERVE_REPLICA_NAME=name,
                             AGSERVE_RELOAD_INTERVAL=str(RELOAD_INTERVAL), AGSERVE_CACHE_SECRET=CACHE_SECRET,
                             AGSERVE_DATABASE_TIMEOUT="2", AGSERVE_ALERT_RULES=str(rules),
                             AGSERVE_ALERT_INTERVAL=str(ALERT_INTERVAL), WEB_CONCURRENCY=str(WORKERS))
            fleet.replicas[name] = Replica(name, env, var, key="")
        fleet.started_at = time.time()
        try:
            for replica in fleet.all:  # at the same instant, on an empty database: each races to migrate it
                replica.start()
            for replica in fleet.all:
                replica.wait_ready()
            database = Database(database_url({"DATABASE_URL": url}))
            key, _ = KeyStore(database).create("fleet-tests", ["predict", "model_info", "admin", "metrics"])
            database.dispose()
            for replica in fleet.all:
                replica.key = replica.server.key = key
            yield fleet
        finally:
            for replica in fleet.all:
                replica.stop()
