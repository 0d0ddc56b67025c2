"""Refusals cost little: bodies at the default 32 MiB limit that will be refused (a CSV header of millions of
columns, a field of tens of megabytes, rows or split columns past the column limit) each cost the one worker under
200 ms of CPU and under 20 MB of RSS (read from /proc), while /health/live keeps answering within 100 ms.

A JSON row of 400,000 keys is held to the CPU and RSS bounds only: orjson holds the GIL while it builds the
object (about 0.1 s), so a probe of the same, single, worker waits that long; with two workers the other answers."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from app.config import SETTINGS
from tests.data import FEATURES, to_records
from tests.servers import gunicorn

pytestmark = pytest.mark.server
LIMIT = next(s.default for s in SETTINGS if s.name == "MAX_BODY_BYTES")  # 32 MiB, the default
CPU_SECONDS, RSS_MB, LIVE_SECONDS = 0.2, 20, 0.1
TICKS = 100  # clock ticks per second in /proc/<pid>/stat (USER_HZ)
GIL_BOUND = "JSON row of 400,000 keys"


def worker_cpu_and_rss(pid: int) -> tuple[float, float]:
    """(user + system CPU seconds, resident MB) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15 of stat
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return cpu, rss_kb / 1024


def at_limit(head: bytes, filler: bytes, tail: bytes) -> bytes:
    """head + filler repeated + tail, exactly LIMIT bytes long."""
    room = LIMIT - len(head) - len(tail)
    return head + (filler * (room // len(filler) + 1))[:room] + tail


def bodies(row: dict) -> dict[str, tuple[str, bytes]]:
    header = ",".join(FEATURES).encode()
    values = ",".join("" if row[f] is None else str(row[f]) for f in FEATURES).encode()
    columns = [f"c{i}" for i in range(400_000)]
    last_color = {**{k: v for k, v in row.items() if k != "color"}, "color": ""}  # its value ends the body
    return {
        "CSV header of millions of columns": ("text/csv", at_limit(header + b",", b"c1234567,", b"\n" + values)),
        "CSV text cell of 32 MiB": ("text/csv", at_limit(header + b"\n" + values.rsplit(b",", 1)[0] + b',"',
                                                           b"word ", b'"\n')),
        "JSON category of 32 MiB": ("application/json",
                                    at_limit(json.dumps({"data": [last_color]}).encode()[:-4], b"x", b'"}]}')),
        GIL_BOUND: ("application/json", json.dumps(
            {"data": [dict(row, **{c: 1 for c in columns})]}).encode()),
        "split of 400,000 columns": ("application/json", json.dumps(
            {"data": {"columns": FEATURES + columns, "data": [[row[f] for f in FEATURES] + [0] * len(columns)]}})
            .encode()),
    }


class LivenessProbe(threading.Thread):
    """Polls /health/live every 20 ms and keeps the slowest answer."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.slowest, self.failures = base, 0.0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        http = requests.Session()
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                status = http.get(f"{self.base}/health/live", timeout=5).status_code
                if status != 200:
                    self.failures.append(status)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.02)


@pytest.fixture(scope="module")
def server(repository_path):
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS="binary") as running:
        yield running


def test_refusals_at_the_body_limit_cost_little_and_liveness_stays_fast(server, dataset):
    row = to_records(dataset[1][FEATURES].dropna().head(1))[0]
    (pid,) = server.worker_pids()
    http = server.session()
    assert http.post(f"{server.base}/predict", json={"data": [row]}, timeout=30).status_code == 200
    for name, (content_type, payload) in bodies(row).items():  # the first of each warms up the code path
        assert len(payload) <= LIMIT, name
        http.post(f"{server.base}/predict", data=payload, headers={"Content-Type": content_type}, timeout=20)

    costs = {}
    for name, (content_type, payload) in bodies(row).items():
        cpu_before, rss_before = worker_cpu_and_rss(pid)
        response = http.post(f"{server.base}/predict", data=payload, headers={"Content-Type": content_type},
                             timeout=20)
        cpu_after, rss_after = worker_cpu_and_rss(pid)
        assert response.status_code in (413, 422), (name, response.status_code, response.text[:300])
        assert set(response.json()) == {"error", "details", "request_id"}, name
        assert len(response.content) < 20_000, (name, len(response.content))  # nothing large is echoed back
        # Then again with liveness probed meanwhile (its own requests would count as the worker's CPU above).
        probe = LivenessProbe(server.base)
        probe.start()
        again = http.post(f"{server.base}/predict", data=payload, headers={"Content-Type": content_type}, timeout=20)
        probe.stopping.set()
        probe.join(10)
        assert again.status_code == response.status_code and not probe.failures, (name, probe.failures)
        costs[name] = (round(cpu_after - cpu_before, 3), round(rss_after - rss_before, 1), round(probe.slowest, 3))
    print(costs)
    assert all(cpu < CPU_SECONDS for cpu, _, _ in costs.values()), costs
    assert all(rss < RSS_MB for _, rss, _ in costs.values()), costs
    assert all(live < LIVE_SECONDS for name, (_, _, live) in costs.items() if name != GIL_BOUND), costs
    assert server.worker_pids() == [pid]
