"""make bench-knobs: which Gunicorn shape and recycling setting serve best here, measured rather than assumed.

Each shape (workers × gthread threads, and gunicorn's gevent worker in place of ours; workers pinned to CPUs or
not) gets a fresh production server, then `/health/live` at concurrency 1 and 32 and one-row predictions at
concurrency 1 and 32 for both bench models;
the shapes take turns over ROUNDS rounds and the table gives medians. Then 60 s at concurrency 32 with the old and the new recycling default, per 10 s window.
Appends both tables to BENCHMARKS.md (run `make bench` first: it rewrites the file).
"""
from __future__ import annotations

import os
import signal
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import LONG, ROOT, WORK, free_port, hey, log, prepare_models, start_server  # noqa: E402

# (workers, threads, AGSERVE_PIN_WORKERS); the first is the default
SHAPES = [(2, 32, "auto"), (2, 32, "off"), (2, 8, "auto"), (2, 16, "auto"), (3, 8, "auto"), (4, 8, "auto"),
          (2, "gevent", "auto")]
GEVENT = "--worker-class gevent --worker-connections 1000"  # gunicorn's own greenlet worker, our app unchanged
ROUNDS = int(os.environ.get("BENCH_RUNS", "2"))
SECONDS = os.environ.get("BENCH_KNOB_SECONDS", "6")
RECYCLING = [("10000", "1000"), ("100000", "10000")]  # (MAX_REQUESTS, JITTER): the old default, then the new one


def measure(url: str, key: str) -> dict:
    one = {name: WORK / f"{name}-one.json" for name in ("iris", "mixed")}
    for name in one:  # warm every worker
        hey(f"{url}/models/{name}/predict", key, one[name], "application/json", concurrency=8, requests_=200)
    figures = {"live_c1": hey(f"{url}/health/live", key, None, "", concurrency=1, duration=f"{SECONDS}s"),
               "live_c32": hey(f"{url}/health/live", key, None, "", concurrency=32, duration=f"{SECONDS}s")}
    for name in one:
        figures[f"{name}_c1"] = hey(f"{url}/models/{name}/predict", key, one[name], "application/json",
                                    concurrency=1, duration=f"{SECONDS}s")
        figures[f"{name}_c32"] = hey(f"{url}/models/{name}/predict", key, one[name], "application/json",
                                     concurrency=32, duration=f"{SECONDS}s")
    return figures


def serving(repository: Path, auth_db: Path, **settings: str):
    port = free_port()
    process, _ = start_server(repository, auth_db, port, WORK / "gunicorn-knobs.log", **settings)
    return process, f"http://127.0.0.1:{port}"


def main() -> None:
    from app.auth.keys import KeyStore
    from app.db import sqlite_file
    from run import PEPPER

    repository, auth_db = WORK / "models", WORK / "auth.sqlite3"
    prepare_models(repository)
    if not all((WORK / f"{name}-one.json").is_file() for name in ("iris", "mixed")):
        raise SystemExit("run `make bench` first: it writes the request bodies")
    key, _ = KeyStore(sqlite_file(auth_db), PEPPER).create("knobs", ["predict", "metrics"])
    results: dict[tuple, list[dict]] = {}
    for round_ in range(ROUNDS):
        for workers, threads, pin in SHAPES:
            log(f"round {round_ + 1}: {workers} workers × {threads} threads, pinning {pin}")
            shape = {"GUNICORN_CMD_ARGS": GEVENT} if threads == "gevent" else {"AGSERVE_THREADS": str(threads)}
            process, url = serving(repository, auth_db, WEB_CONCURRENCY=str(workers), AGSERVE_PIN_WORKERS=pin, **shape)
            try:
                results.setdefault((workers, threads, pin), []).append(measure(url, key))
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
    long_runs = []
    for max_requests, jitter in RECYCLING:
        log(f"{LONG} s at concurrency 32 with AGSERVE_MAX_REQUESTS={max_requests}")
        process, url = serving(repository, auth_db, AGSERVE_MAX_REQUESTS=max_requests,
                               AGSERVE_MAX_REQUESTS_JITTER=jitter)
        try:
            hey(f"{url}/models/mixed/predict", key, WORK / "mixed-one.json", "application/json", concurrency=8,
                requests_=200)
            long_runs.append((max_requests, jitter, hey(f"{url}/models/mixed/predict", key, WORK / "mixed-one.json",
                                                        "application/json", concurrency=32, duration=f"{LONG}s")))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    write(results, long_runs)


def write(results: dict, long_runs: list) -> None:
    def p50(runs: list[dict], key: str) -> str:
        return f"p50 {statistics.median(r[key]['p50'] for r in runs):.2f} ms"

    def cell(runs: list[dict], key: str) -> str:
        rate = statistics.median(r[key]["throughput"] for r in runs)
        p99 = statistics.median(r[key]["p99"] for r in runs)
        errors = sum(r[key]["errors"] for r in runs)
        return f"{rate:.0f} req/s, p99 {p99:.0f} ms" + (f", {errors} errors" if errors else "")

    lines = ["", "## Knobs: worker shape and recycling (`make bench-knobs`)", "",
             f"Production server, cache off; medians of {ROUNDS} rounds in which the shapes take turns, {SECONDS} s "
             "per figure. One-row predictions. Pinning `auto` (the default) keeps each worker on one of this "
             "machine's 2 CPUs (with 3 or 4 workers, CPUs are shared in turn); `off` leaves every worker on both.", "",
             "| Workers × threads, pinning | `/health/live` c=1 | `/health/live` c=32 | iris c=1 | iris c=32 | "
             "mixed c=1 | mixed c=32 |",
             "|---|---|---|---|---|---|---|"]
    for (workers, threads, pin), runs in results.items():
        default = " (default)" if (workers, threads, pin) == SHAPES[0] else ""
        threads = "gevent (1000 connections each)" if threads == "gevent" else threads
        lines.append(f"| {workers} × {threads}, {pin}{default} | {cell(runs, 'live_c1')} | {cell(runs, 'live_c32')} | "
                     f"{p50(runs, 'iris_c1')} | {cell(runs, 'iris_c32')} | {p50(runs, 'mixed_c1')} | "
                     f"{cell(runs, 'mixed_c32')} |")
    lines += ["", f"Mixed model, {LONG} s at concurrency 32, by worker recycling setting (answered req/s per 10 s "
              "window; each recycle is a model load on this 2-core machine):", "",
              "| `AGSERVE_MAX_REQUESTS` (jitter) | Windows (req/s) | Last 3 ÷ first 3 |", "|---|---|---|"]
    for max_requests, jitter, run in long_runs:
        windows = run["windows"]
        held = statistics.median(windows[-3:]) / statistics.median(windows[:3]) if len(windows) >= 6 else float("nan")
        lines.append(f"| {max_requests} ({jitter}) | {', '.join(f'{w:.0f}' for w in windows)} | {held * 100:.0f} % |")
    text = "\n".join(lines) + "\n"
    with open(ROOT / "BENCHMARKS.md", "a") as report:
        report.write(text)
    print(text)


if __name__ == "__main__":
    main()
