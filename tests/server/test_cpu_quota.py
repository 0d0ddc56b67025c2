"""Math threads and the default worker count follow the cgroup CPU quota (a container's CPU limit), not only the
affinity mask, which still shows every core of the node."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from app import threads
from app.config import load_settings, math_threads, worker_count
from app.threads import cgroup_cpu_limit
from tests.support.servers import BIN, ROOT, free_port, server_env, stop, wait_until


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_cpu_max_is_read_at_every_level_up_to_the_root(tmp_path):
    membership = tmp_path / "proc-self-cgroup"
    write(membership, "0::/kubepods/pod1/container\n")
    write(tmp_path / "kubepods" / "pod1" / "container" / "cpu.max", "max 100000\n")
    write(tmp_path / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")  # the pod's limit: 2.5 CPUs
    write(tmp_path / "kubepods" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path, membership) == 2.5
    write(tmp_path / "kubepods" / "cpu.max", "150000 100000\n")  # a tighter parent wins
    assert cgroup_cpu_limit(tmp_path, membership) == 1.5


def test_cgroup_v1_quota_and_no_limit(tmp_path):
    membership = tmp_path / "proc-self-cgroup"
    write(membership, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    folder = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "50000\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path, membership) == 0.5
    write(folder / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_limit(tmp_path, membership) is None
    assert cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "no-such-file") is None


def test_a_quota_below_the_cores_lowers_math_threads_and_default_workers(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))  # a 32-core node
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    one_worker = load_settings(environ={"WEB_CONCURRENCY": "1"})
    default = load_settings(environ={})
    assert (worker_count(default), math_threads(one_worker), math_threads(default)) == (2, 32, 16)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.0)  # the pod's limit: 2 CPUs
    assert (worker_count(default), math_threads(one_worker), math_threads(default)) == (2, 2, 1)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert (worker_count(default), math_threads(one_worker), math_threads(default)) == (1, 1, 1)


@pytest.fixture()
def one_cpu_cgroup():
    """A real cgroup limited to one CPU (v2 cpu.max, else v1 cfs quota); the path of its process list."""
    unified = Path("/sys/fs/cgroup")
    name = f"agserve-test-{os.getpid()}"
    if "cpu" in (unified / "cgroup.controllers").read_text().split() if (unified / "cgroup.controllers").is_file() else False:
        folder = unified / name
        folder.mkdir()
        (folder / "cpu.max").write_text("100000 100000")
    elif (unified / "cpu" / "cpu.cfs_quota_us").is_file():
        folder = unified / "cpu" / name
        folder.mkdir()
        (folder / "cpu.cfs_period_us").write_text("100000")
        (folder / "cpu.cfs_quota_us").write_text("100000")
    else:
        pytest.skip("this machine offers no writable cgroup CPU controller")
    try:
        yield folder / "cgroup.procs"
    finally:
        folder.rmdir()


@pytest.mark.server
def test_gunicorn_in_a_one_cpu_cgroup_runs_one_worker_with_one_math_thread(repository_path, tmp_path,
                                                                           one_cpu_cgroup):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least 2 cores for a 1-CPU quota to be lower than the affinity mask")
    port = free_port()
    env = server_env(AGSERVE_MODEL_REPOSITORY=str(repository_path), AGSERVE_MODELS="binary",
                     AGSERVE_BIND=f"127.0.0.1:{port}", AGSERVE_AUTH_DB=str(tmp_path / "agserve.sqlite3"),
                     AGSERVE_MONITOR_DB=str(tmp_path / "monitor.sqlite3"), WEB_CONCURRENCY="0")  # 0: the default rule

    def join_cgroup():  # in the child, before gunicorn starts: the master and its workers live in the cgroup
        one_cpu_cgroup.write_text(str(os.getpid()))
    process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=join_cgroup)
    try:
        ready = wait_until(f"http://127.0.0.1:{port}/health/ready", 90, process).json()
        import psutil
        assert len(psutil.Process(process.pid).children()) == 1
        pools = ready["worker"]["thread_pools"]
        assert pools and all(p["threads"] == 1 for p in pools)
        assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
    finally:
        stop(process)
