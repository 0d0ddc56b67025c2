"""A load client for tests, run as its own process: python -m tests.support.loadgen URL KEY SECONDS THREADS RATE OUT BODY.

Each line of OUT is one response: {"t": unix time at completion, "status": code, "version": model version or null,
"request_id": the answer's request id or null}.
"""
from __future__ import annotations

import json
import sys
import threading
import time

import requests


def run(url: str, key: str, seconds: float, threads: int, rate: float, out: str, body: str) -> None:
    deadline = time.time() + seconds
    interval = threads / rate  # each thread paces itself so that all together send `rate` per second
    lines: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        session = requests.Session()
        session.headers.update({"X-API-Key": key, "Content-Type": "application/json"})
        next_send = time.time()
        while time.time() < deadline:
            try:
                response = session.post(url, data=body, timeout=30)
                answer = response.json() if response.ok else {}
                record = {"t": time.time(), "status": response.status_code,
                          "version": answer.get("model_info", {}).get("version"),
                          "request_id": answer.get("request_id")}
            except (requests.RequestException, ValueError) as exc:
                record = {"t": time.time(), "status": 0, "version": None, "error": type(exc).__name__}
            with lock:
                lines.append(json.dumps(record))
            next_send += interval
            time.sleep(max(0.0, next_send - time.time()))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    with open(out, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    url, key, seconds, threads, rate, out, body = sys.argv[1:8]
    run(url, key, float(seconds), int(threads), float(rate), out, body)
