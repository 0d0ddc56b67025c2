"""`agserve loadtest`: a bounded load generator (concurrency, duration or request count, latency percentiles).

Threads, each with its own keep-alive session, send requests until the duration or the request count is reached;
every answer is timed and counted by status (connection failures count as status 0 with their error type). The report
gives totals, failures by status, success rate, throughput and latency percentiles. Only loopback targets are
allowed unless the caller says otherwise, so nobody load-tests someone else's server by accident.
"""
from __future__ import annotations

import ipaddress
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable
from urllib.parse import urlparse

import requests

MAX_CONCURRENCY = 512
MAX_DURATION = 3600.0
MAX_REQUESTS = 1_000_000


class LoadTestError(ValueError):
    """A run that must not start (bad bounds, a target outside loopback)."""


@dataclass
class LoadReport:
    url: str
    concurrency: int
    total: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # status (or error type) → count
    success_rate: float = 0.0
    seconds: float = 0.0
    throughput: float = 0.0  # requests per second
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # avg, min, max, p50, p95, p99

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [f"target        {self.url} (concurrency {self.concurrency})",
                 f"requests      {self.total} in {self.seconds:.1f} s: {self.throughput:.1f} req/s",
                 f"successes     {self.successes} ({self.success_rate:.2%})",
                 "failures      " + (", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none")]
        if self.latency_ms.get("p50") is not None:
            lines.append("latency ms    " + "  ".join(f"{k} {v:.1f}" for k, v in self.latency_ms.items()))
        return "\n".join(lines)


def check_target(url: str, allow_remote: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LoadTestError(f"{url!r} is not an http(s) URL")
    if allow_remote:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 80)}
    except socket.gaierror as exc:
        raise LoadTestError(f"cannot resolve {parsed.hostname}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise LoadTestError(f"{parsed.hostname} is not a loopback address; pass --allow-remote to load it anyway")


def percentile(ordered: list[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run(url: str, *, concurrency: int, duration: float | None = None, requests_total: int | None = None,
        body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30,
        progress: Callable[[int, int, float], None] | None = None, allow_remote: bool = False) -> LoadReport:
    """Load url (POST body as JSON when given, else GET) until duration seconds or requests_total requests."""
    check_target(url, allow_remote)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadTestError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    if (duration is None) == (requests_total is None):
        raise LoadTestError("give exactly one of a duration or a number of requests")
    if duration is not None and not 0 < duration <= MAX_DURATION:
        raise LoadTestError(f"duration must be between 0 and {MAX_DURATION:g} seconds")
    if requests_total is not None and not 1 <= requests_total <= MAX_REQUESTS:
        raise LoadTestError(f"requests must be between 1 and {MAX_REQUESTS}")

    lock = threading.Lock()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    issued = [0]
    started = time.perf_counter()
    deadline = started + (duration if duration is not None else MAX_DURATION)
    send_headers = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})

    def take_turn() -> bool:
        with lock:
            if time.perf_counter() >= deadline or (requests_total is not None and issued[0] >= requests_total):
                return False
            issued[0] += 1
            return True

    def worker() -> None:
        with requests.Session() as session:
            session.headers.update(send_headers)
            while take_turn():
                sent = time.perf_counter()
                try:
                    response = session.post(url, data=body, timeout=timeout) if body is not None else \
                        session.get(url, timeout=timeout)
                    outcome = str(response.status_code)
                except requests.RequestException as exc:
                    outcome = f"error:{type(exc).__name__}"
                elapsed = (time.perf_counter() - sent) * 1000
                with lock:
                    latencies.append(elapsed)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    next_report = started + 1.0
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.05)
        if progress is not None and time.perf_counter() >= next_report:
            next_report += 1.0
            with lock:
                done, failed = len(latencies), sum(v for k, v in outcomes.items() if not k.startswith("2"))
            progress(done, failed, time.perf_counter() - started)
    seconds = time.perf_counter() - started

    ordered = sorted(latencies)
    successes = sum(v for k, v in outcomes.items() if k.startswith("2"))
    total = len(ordered)
    return LoadReport(
        url=url, concurrency=concurrency, total=total, successes=successes,
        failures={k: v for k, v in outcomes.items() if not k.startswith("2")},
        success_rate=successes / total if total else 0.0, seconds=seconds,
        throughput=total / seconds if seconds else 0.0,
        latency_ms={"avg": sum(ordered) / total if total else None, "min": ordered[0] if ordered else None,
                    "max": ordered[-1] if ordered else None, "p50": percentile(ordered, 0.50),
                    "p95": percentile(ordered, 0.95), "p99": percentile(ordered, 0.99)})
