"""make bench: the production configuration (gunicorn, 2 workers) against in-process AutoGluon, same rows, same run.

Each scenario runs RUNS times; BENCHMARKS.md reports the median of each figure. The load comes from `hey` in its own
process on loopback. Models: the iris demo (what `make run` serves) and a mixed-type LightGBM model.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Callable

import pandas as pd
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
BIN = Path(sys.executable).parent
PEPPER = secrets.token_urlsafe(32)  # production refuses to run without a real key pepper
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SECONDS = os.environ.get("BENCH_SECONDS", "10")
BIG = 10_000
WINDOW = 10  # seconds per window of the long run
EARLIER_C32 = {"iris": 393, "mixed": 428}  # BENCHMARKS.md of 2026-11-27, before the throughput work (issue 17)
LONG = os.environ.get("BENCH_LONG_SECONDS", "60")
WORKERS = 2  # the production shape on this 2-core machine


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_models(repository: Path) -> None:
    """The iris demo model and a mixed-type LightGBM model, trained once and reused."""
    from app.demo import DEMO_NAME, MIXED_FEATURES, mixed_frame, train_demo
    from app.inference import ModelRepository

    models = ModelRepository(repository)
    if models.active_version(DEMO_NAME) is None:
        log("training the iris demo model")
        with tempfile.TemporaryDirectory() as workdir:
            path, holdout = train_demo(Path(workdir))
            models.import_predictor(path, DEMO_NAME, reference=holdout)
            models.activate(DEMO_NAME, "1")  # the bench measures serving, not the gate
    if models.active_version("mixed") is None:
        log("training the mixed-type LightGBM model")
        from autogluon.tabular import TabularPredictor

        frame = mixed_frame(2000, seed=1)
        with tempfile.TemporaryDirectory() as workdir:
            TabularPredictor(label="y_binary", path=f"{workdir}/mixed", verbosity=0).fit(
                frame.iloc[:1600][MIXED_FEATURES + ["y_binary"]], hyperparameters={"GBM": {}}, num_cpus=1)
            models.import_predictor(f"{workdir}/mixed", "mixed",
                                    reference=frame.iloc[1600:][MIXED_FEATURES + ["y_binary"]])
            models.activate("mixed", "1")


def rows_for(repository: Path, name: str) -> tuple[dict, pd.DataFrame]:
    """One sample row, and BIG rows drawn from the reference data, as a DataFrame with training dtypes."""
    from app.demo import MIXED_FEATURES, demo_data, mixed_frame

    manifest = json.loads((repository / name / "1" / "manifest.json").read_text())
    if name == "iris":
        frame = demo_data().drop(columns=["species"])
    else:
        frame = mixed_frame(2000, seed=2)[MIXED_FEATURES]
    big = frame.sample(BIG, replace=True, random_state=0).reset_index(drop=True)
    return manifest["reference"]["sample_row"], big


def in_process(repository: Path, name: str, sample: dict,
               big: pd.DataFrame) -> tuple[dict, Callable[[], float], Callable[[], float]]:
    """AutoGluon's own predict_proba in this process: the sequential single-row rate and 10,000 rows, medians of RUNS;
    and callables giving the single-row p50 and the 10,000-row rate, measured beside each server run (this machine's
    speed drifts by a fifth within minutes)."""
    from autogluon.tabular import TabularPredictor

    from app.inference.boosters import boosters_reading_blocks
    from app.inference.forests import forests_in_turn
    from app.inference.generators import pipeline_in_columns
    from app.inference.wrappers import wrappers_by_position
    from app.threads import apply_thread_limits, cap_estimator_jobs

    apply_thread_limits(1)  # like each of the 2 workers on this 2-core machine
    predictor = TabularPredictor.load(str(repository / name / "1" / "predictor"), verbosity=0)
    predictor.persist()
    cap_estimator_jobs(predictor, 1)  # and scikit-learn's own thread pools, as each worker caps them
    one = big.head(1).copy()
    one.iloc[0] = pd.Series(sample)

    def single() -> list[float]:
        for _ in range(30):
            predictor.predict_proba(one)
        timings = []
        for _ in range(300):
            started = time.perf_counter()
            predictor.predict_proba(one)
            timings.append(time.perf_counter() - started)
        return timings

    autogluon_p50 = statistics.median(single()) * 1000  # AutoGluon's own call: forests in joblib, features in DataFrames
    forests_in_turn(predictor)  # then as each worker calls them: the baseline is the same model call
    pipeline_in_columns(predictor._learner.feature_generator)
    boosters_reading_blocks(predictor)
    wrappers_by_position(predictor)

    def rows_per_s() -> float:
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            predictor.predict_proba(big)
            timings.append(time.perf_counter() - started)
        return BIG / statistics.median(timings)

    rates = []
    for _ in range(RUNS):
        timings = single()
        rates.append(len(timings) / sum(timings))
    from app.config import load_settings
    from app.inference import ModelRepository
    from app.inference.loading import load
    from app.inference.tables import table_from_records

    # the call a worker's batcher makes: validated columns to answers (the few-rows plans), no HTTP around it
    served, _ = load(ModelRepository(repository).get(name), load_settings({}, {"BATCHING": False}))
    columns = served.validate_table(table_from_records([sample], served.feature_names))

    def served_p50() -> float:
        for _ in range(30):
            served.predict_validated(columns, 1)
        timings = []
        for _ in range(300):
            started = time.perf_counter()
            served.predict_validated(columns, 1)
            timings.append(time.perf_counter() - started)
        return statistics.median(timings) * 1000

    return ({"rate": statistics.median(rates), "autogluon_p50": autogluon_p50},
            lambda: statistics.median(single()) * 1000, rows_per_s, served_p50)


def start_server(repository: Path, auth_db: Path, port: int, log_path: Path, **settings: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGSERVE_")}
    env.update({"AGSERVE_ENV": "production", "AGSERVE_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(WORKERS),
                "AGSERVE_MODEL_REPOSITORY": str(repository), "AGSERVE_AUTH_DB": str(auth_db), "AGSERVE_KEY_PEPPER": PEPPER,
                "AGSERVE_LOG_LEVEL": "warning",  # worker recycling as in production (AGSERVE_MAX_REQUESTS)
                "AGSERVE_PREDICTION_LOG_DIR": str(WORK / "predictions"), "AGSERVE_MONITOR_DB": str(WORK / "monitor.sqlite3"),
                # hey repeats one body: with the cache on, every request after the first would skip the model.
                "AGSERVE_CACHE": "false", **settings})
    started = time.monotonic()
    process = subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/health/ready"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited; see {log_path}")
        try:
            if requests.get(url, timeout=2).status_code == 200 and \
                    _every_worker_ready(process, int(env["WEB_CONCURRENCY"]), url):
                return process, time.monotonic() - started
        except requests.RequestException:
            pass
        if time.monotonic() - started > 180:
            raise SystemExit("gunicorn did not become ready in 180 s")
        time.sleep(0.05)


@contextlib.contextmanager
def otlp_sink():
    """A collector's OTLP/HTTP traces endpoint on loopback that accepts every export and counts them."""
    exports = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            exports.append(len(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", exports
    finally:
        server.shutdown()
        server.server_close()


def traced_scenario(repository: Path, auth_db: Path, port: int, key: str, one: Path) -> tuple[dict, int]:
    """The iris model at concurrency 1 on a server exporting every request's spans (AGSERVE_OTLP_ENDPOINT) to a
    local receiver; returns hey's figures and how many exports the receiver got."""
    with otlp_sink() as (endpoint, exports):
        process, _ = start_server(repository, auth_db, port, WORK / "gunicorn-traced.log",
                                  AGSERVE_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="500")
        try:
            target = f"http://127.0.0.1:{port}/models/iris/predict"
            hey(target, key, one, "application/json", concurrency=4, requests_=400)  # warm both workers
            figures = hey(target, key, one, "application/json", concurrency=1, duration=f"{SECONDS}s")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)  # a stopping worker sends what it still holds
        return figures, len(exports)


def _every_worker_ready(process, workers: int, url: str) -> bool:
    """Every worker has mapped LightGBM (loaded its models) and answers /health/ready itself: each asked in turn with
    the others paused (SIGSTOP), since a new connection otherwise reaches whichever worker the kernel wakes, and a
    worker still loading would leave the first seconds of a run to the other."""
    children = psutil.Process(process.pid).children()
    if len(children) != workers or \
            not all(any("lib_lightgbm" in m.path for m in c.memory_maps()) for c in children):
        return False
    for child in children:
        others = [other for other in children if other.pid != child.pid]
        for other in others:
            other.suspend()
        try:
            answer = requests.get(url, timeout=2)
            if answer.status_code != 200 or answer.json()["worker"]["pid"] != child.pid:
                return False
        except requests.RequestException:
            return False
        finally:
            for other in others:
                other.resume()
    return True


def hey(url: str, key: str, body: Path | None, content_type: str, *, concurrency: int, requests_: int | None = None,
        duration: str | None = None) -> dict:
    """Run hey once (a GET when body is None); return throughput, latency percentiles (ms), errors and the
    answered requests per second in each 10 s window, from its per-request CSV."""
    args = ["hey", "-H", f"X-API-Key: {key}", "-c", str(concurrency), "-o", "csv", "-t", "60"]
    if body is not None:
        args += ["-m", "POST", "-T", content_type, "-D", str(body)]
    args += ["-z", duration] if duration else ["-n", str(requests_)]
    output = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    records = list(csv.DictReader(io.StringIO(output)))
    times = sorted(float(r["response-time"]) * 1000 for r in records)
    ok = sum(1 for r in records if r["status-code"] == "200")
    span = max(float(r["offset"]) + float(r["response-time"]) for r in records) - \
        min(float(r["offset"]) for r in records)

    answered = sorted(float(r["response-time"]) * 1000 for r in records if r["status-code"] == "200")

    def pct(p: float, values: list[float] = times) -> float:
        return values[min(len(values) - 1, int(round(p / 100 * len(values))) - 1)] if values else float("nan")

    windows = [0] * int(span // WINDOW)  # whole windows only
    for r in records:
        slot = int(float(r["offset"]) // WINDOW)
        if r["status-code"] == "200" and slot < len(windows):
            windows[slot] += 1
    return {"requests": len(records), "errors": len(records) - ok, "throughput": ok / span,
            "windows": [count / WINDOW for count in windows],
            "p50": pct(50), "p95": pct(95), "p99": pct(99), "ok_p50": pct(50, answered), "ok_p99": pct(99, answered),
            "refused": sum(1 for r in records if r["status-code"] == "503")}


def explanation_scenarios(url: str, key: str, one: Path, scenario: dict, settings: dict[str, str]) -> None:
    """One-row explanations at concurrency 1 and 8, and predictions' p99 alone and while explanations run at
    their limit (AGSERVE_EXPLAIN_CONCURRENCY per worker × 2 workers at once)."""
    from app.config import load_settings

    limit = 2 * load_settings(settings)["EXPLAIN_CONCURRENCY"]
    explain, predict = f"{url}/models/mixed/explain", f"{url}/models/mixed/predict"
    hey(explain, key, one, "application/json", concurrency=2, requests_=20)  # warm both workers
    for concurrency in (1, 8):
        log(f"mixed: explanations at concurrency {concurrency}")
        scenario.setdefault(f"explain_c{concurrency}", []).append(
            hey(explain, key, one, "application/json", concurrency=concurrency, duration=f"{SECONDS}s"))
    log("mixed: predictions at concurrency 8, alone")
    scenario.setdefault("predict_c8", []).append(hey(predict, key, one, "application/json", concurrency=8,
                                                     duration=f"{SECONDS}s"))
    log("mixed: predictions at concurrency 8, with explanations at their limit")
    background: dict = {}
    explaining = threading.Thread(target=lambda: background.update(hey(
        explain, key, one, "application/json", concurrency=limit, duration=f"{int(SECONDS) + 2}s")))
    explaining.start()
    time.sleep(1)  # the explanations are running before the predictions start, and go on after they end
    scenario.setdefault("predict_c8_explaining", []).append(hey(predict, key, one, "application/json",
                                                                concurrency=8, duration=f"{SECONDS}s"))
    explaining.join()
    scenario.setdefault("explain_beside", []).append(background)


def metric_totals(url: str, key: str, names: dict[str, str], model: str | None = None) -> dict[str, float]:
    """Each metric of names (metric → field) summed over workers and labels from the server's /metrics; with model,
    only that model's lines."""
    text = requests.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=10).text
    totals = dict.fromkeys(names.values(), 0.0)
    for line in text.splitlines():
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric in names and (model is None or f'model="{model}"' in line):
            totals[names[metric]] += float(line.split()[-1])
    return totals


def worker_starts(url: str, key: str) -> float:
    """Workers started since the server did (each recycle adds one)."""
    return metric_totals(url, key, {"agserve_worker_starts_total": "starts"})["starts"]


def model_calls(url: str, key: str, name: str) -> dict[str, float]:
    """The model's calls so far, the requests they answered and their seconds."""
    return metric_totals(url, key, {"agserve_batch_requests_count": "calls", "agserve_batch_requests_sum": "requests",
                                    "agserve_model_call_seconds_sum": "seconds"}, name)


def batching_during(url: str, key: str, name: str, before: dict[str, float], seconds: float) -> dict[str, float]:
    """Requests per model call, the mean call's ms, and the share of the run each worker's model was busy."""
    after = model_calls(url, key, name)
    calls = after["calls"] - before["calls"]
    busy = after["seconds"] - before["seconds"]
    return {"requests_per_call": (after["requests"] - before["requests"]) / calls, "call_ms": busy / calls * 1000,
            "busy": busy / (seconds * WORKERS)}


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0] if not isinstance(runs[0][k], list)}


def v2_body(repository: Path, name: str, sample: dict) -> dict:
    """The sample row as Open Inference Protocol JSON tensors: one [1] tensor per feature."""
    from app.api.v2 import DATATYPES

    manifest = json.loads((repository / name / "1" / "manifest.json").read_text())
    return {"inputs": [{"name": f["name"], "shape": [1], "datatype": DATATYPES[f["kind"]],
                        "data": [sample.get(f["name"])]} for f in manifest["features"]]}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = psutil.virtual_memory().total / 2 ** 30
    return (f"{cpu}; {psutil.cpu_count()} cores; {memory:.0f} GiB; Python {platform.python_version()}; "
            f"autogluon.tabular {package_version('autogluon.tabular')}; gunicorn {package_version('gunicorn')}; "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    if shutil.which("hey") is None:
        raise SystemExit("hey is missing: make bench installs it (apt-get install -y hey)")
    WORK.mkdir(parents=True, exist_ok=True)
    # Every run starts with an empty prediction log and monitoring store, so earlier runs do not weigh on this one.
    shutil.rmtree(WORK / "predictions", ignore_errors=True)
    for stale in WORK.glob("monitor.sqlite3*"):
        stale.unlink()
    repository, auth_db = WORK / "models", WORK / "auth.sqlite3"
    prepare_models(repository)
    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    key, _ = KeyStore(sqlite_file(auth_db), PEPPER).create("bench", ["predict", "explain", "metrics"])
    results, facts, singles, bigs, calls = {}, {}, {}, {}, {}
    for name in ("iris", "mixed"):
        sample, big = rows_for(repository, name)
        log(f"{name}: in-process baseline")
        baseline, singles[name], bigs[name], calls[name] = in_process(repository, name, sample, big)
        bodies = {"one": WORK / f"{name}-one.json", "json": WORK / f"{name}-big.json", "csv": WORK / f"{name}-big.csv"}
        bodies["one"].write_text(json.dumps({"data": [sample]}))
        (WORK / f"{name}-v2.json").write_text(json.dumps(v2_body(repository, name, sample)))
        from app.frames import records

        bodies["json"].write_text(json.dumps({"data": records(big)}))
        big.to_csv(bodies["csv"], index=False, date_format="%Y-%m-%dT%H:%M:%S")
        results[name] = {"baseline": baseline}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready_times = []
    for run in range(RUNS):
        log(f"server start {run + 1}/{RUNS}")
        process, ready = start_server(repository, auth_db, port, WORK / "gunicorn.log")
        ready_times.append(ready)
        try:
            for name in ("iris", "mixed"):
                target = f"{url}/models/{name}/predict"
                one, big_json, big_csv = (WORK / f"{name}-one.json", WORK / f"{name}-big.json",
                                          WORK / f"{name}-big.csv")
                hey(target, key, one, "application/json", concurrency=4, requests_=400)  # warm both workers
                scenario = results[name].setdefault("runs", {})
                log(f"{name}: run {run + 1}: concurrency 1")
                before = model_calls(url, key, name)
                scenario.setdefault("c1", []).append(hey(target, key, one, "application/json", concurrency=1,
                                                         duration=f"{SECONDS}s"))
                scenario["c1"][-1].update(batching_during(url, key, name, before, float(SECONDS)))
                scenario["c1"][-1]["in_process_p50"] = singles[name]()  # the baseline again, minutes later
                scenario["c1"][-1]["served_call_p50"] = calls[name]()  # and the worker's model call, in-process
                log(f"{name}: run {run + 1}: concurrency 32")
                before = model_calls(url, key, name)
                scenario.setdefault("c32", []).append(hey(target, key, one, "application/json", concurrency=32,
                                                          duration=f"{SECONDS}s"))
                scenario["c32"][-1].update(batching_during(url, key, name, before, float(SECONDS)))
                v2, v2_body_path = f"{url}/v2/models/{name}/infer", WORK / f"{name}-v2.json"
                log(f"{name}: run {run + 1}: V2 infer, concurrency 1 and 32")
                scenario.setdefault("v2_c1", []).append(hey(v2, key, v2_body_path, "application/json", concurrency=1,
                                                            duration=f"{SECONDS}s"))
                scenario.setdefault("v2_c32", []).append(hey(v2, key, v2_body_path, "application/json",
                                                             concurrency=32, duration=f"{SECONDS}s"))
                log(f"{name}: run {run + 1}: 10,000 rows, JSON and CSV")
                scenario.setdefault("json", []).append(hey(target, key, big_json, "application/json",
                                                           concurrency=1, requests_=10))
                scenario.setdefault("csv", []).append(hey(target, key, big_csv, "text/csv", concurrency=1,
                                                          requests_=10))
                rows_per_s = bigs[name]()  # the baseline again, beside these two runs
                scenario["json"][-1]["in_process_rows_per_s"] = scenario["csv"][-1]["in_process_rows_per_s"] = rows_per_s
                if name == "mixed":
                    explanation_scenarios(url, key, one, scenario, {})
                    log(f"mixed: run {run + 1}: {LONG} s at concurrency 32 (decay)")
                    before = worker_starts(url, key)
                    long = hey(target, key, one, "application/json", concurrency=32, duration=f"{LONG}s")
                    long["recycled"] = worker_starts(url, key) - before
                    scenario.setdefault("long", []).append(long)
            log(f"run {run + 1}: GET /health/live at concurrency 1 and 32")
            for concurrency in (1, 32):
                facts.setdefault(f"live_c{concurrency}", []).append(
                    hey(f"{url}/health/live", key, None, "", concurrency=concurrency, duration=f"{SECONDS}s"))
            facts.setdefault("rss", []).append([c.memory_info().rss / 2 ** 20
                                                for c in psutil.Process(process.pid).children()])
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
        log(f"iris: run {run + 1}: concurrency 1, tracing on")
        traced, exports = traced_scenario(repository, auth_db, port, key, WORK / "iris-one.json")
        results["iris"]["runs"].setdefault("c1_traced", []).append(traced)
        facts.setdefault("exports", []).append(exports)
    write_report(results, facts, ready_times)


def big_rate(result: dict, scenario: str) -> float:
    """The in-process 10,000-row rate: the median of those measured beside each server run."""
    return statistics.median(r["in_process_rows_per_s"] for r in result["runs"][scenario])


def big_ratio(result: dict, scenario: str) -> float:
    """The server's 10,000-row rate over the in-process one measured right after it: the median of the runs' ratios."""
    return statistics.median(BIG / r["p50"] * 1000 / r["in_process_rows_per_s"] for r in result["runs"][scenario])


def explanation_table(scenario: dict, settings: dict[str, str]) -> list[str]:
    from app.config import load_settings

    resolved = load_settings(settings)
    limit, share = resolved["EXPLAIN_CONCURRENCY"], resolved["EXPLAIN_SHARE"]
    runs = {k: median_of(v) for k, v in scenario.items() if k.startswith(("explain", "predict"))}
    e1, e8, p8, p8e, e4 = (runs[k] for k in ("explain_c1", "explain_c8", "predict_c8", "predict_c8_explaining",
                                             "explain_beside"))
    return [
        "## Explanations (mixed-type model, one row, 10 permutations × 50 background rows)",
        "",
        f"Chunks of {resolved['EXPLAIN_CHUNK_ROWS']} masked rows; while predictions keep coming, explanations take at "
        f"most {share:g} of each worker's model time (`AGSERVE_EXPLAIN_SHARE`), so they slow down beside predictions.",
        "",
        "| Scenario | Answered per s | p50 / p99 ms (answered) | Refused (503, at the limit) | Target |",
        "|---|---|---|---|---|",
        f"| explanations, concurrency 1 | {e1['throughput']:.1f} | {e1['ok_p50']:.0f} / {e1['ok_p99']:.0f} | "
        f"{e1['refused']:.0f} | |",
        f"| explanations, concurrency 8 (limit: {limit} per worker) | {e8['throughput']:.1f} | "
        f"{e8['ok_p50']:.0f} / {e8['ok_p99']:.0f} | {e8['refused']:.0f} of {e8['requests']:.0f} | |",
        f"| predictions, concurrency 8, alone | {p8['throughput']:.0f} | {p8['p50']:.1f} / {p8['p99']:.1f} | | |",
        f"| predictions, concurrency 8, with explanations at their limit ({e4['throughput']:.1f}/s beside, p50 "
        f"{e4['ok_p50']:.0f} ms) | "
        f"{p8e['throughput']:.0f} | {p8e['p50']:.1f} / {p8e['p99']:.1f} | | p99 ≤ +20 %: "
        f"{(p8e['p99'] / p8['p99'] - 1) * 100:+.0f} % |",
        "",
    ]


def explanations_only(settings: dict[str, str]) -> None:
    """`bench/run.py --explanations [AGSERVE_X=VALUE ...]`: only the explanation rows, on a fresh server each run
    with those settings, printed (BENCHMARKS.md is left alone); for A/B runs of explanation settings."""
    WORK.mkdir(parents=True, exist_ok=True)
    repository, auth_db = WORK / "models", WORK / "auth.sqlite3"
    prepare_models(repository)
    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    key, _ = KeyStore(sqlite_file(auth_db), PEPPER).create("bench", ["predict", "explain"])
    one = WORK / "mixed-one.json"
    one.write_text(json.dumps({"data": [rows_for(repository, "mixed")[0]]}))
    port, scenario = free_port(), {}
    for run in range(RUNS):
        log(f"server start {run + 1}/{RUNS} with {settings or 'the defaults'}")
        process, _ = start_server(repository, auth_db, port, WORK / "gunicorn-explain.log", **settings)
        try:
            hey(f"http://127.0.0.1:{port}/models/mixed/predict", key, one, "application/json", concurrency=4,
                requests_=400)  # warm both workers
            explanation_scenarios(f"http://127.0.0.1:{port}", key, one, scenario, settings)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
    print("\n".join(explanation_table(scenario, settings)))


def write_report(results: dict, facts: dict, ready_times: list[float]) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        "",
        "Server: the production configuration (`gunicorn -c gunicorn.conf.py wsgi:app`, `AGSERVE_ENV=production`,",
        "2 gthread workers, micro-batching on; metrics, the prediction log and monitoring on; the prediction cache off,",
        "since the load repeats one body)",
        "on 127.0.0.1, driven by `hey` in its own process. Baseline: AutoGluon's",
        "`predict_proba` in one process on the same rows, with math threads capped at 1 as in each worker; its",
        "single-row p50 is measured again right after each server run's concurrency-1 scenario, and the server's own",
        "cost is the median of those paired differences (one baseline before all runs drifted by up to 2 ms here);",
        "likewise its 10,000-row rate right after each run's two 10,000-row scenarios, and the ratio is the median of",
        "the runs' ratios (the same call took 175 ms in one baseline and 212 ms half an hour later).",
        f"Every figure is the median of {RUNS} runs (a fresh server each run); single-row scenarios run {SECONDS} s.",
        "",
    ]
    for name, result in results.items():
        base, runs = result["baseline"], {k: median_of(v) for k, v in result["runs"].items()}
        c1, c32, js, cs, v1, v32 = (runs[k] for k in ("c1", "c32", "json", "csv", "v2_c1", "v2_c32"))
        base_p50 = c1["in_process_p50"]  # measured beside each server run, not once before them
        title = {"iris": "iris demo model (random forest, 4 numeric features; what `make run` serves)",
                 "mixed": "mixed-type model (LightGBM; numeric, integer, category, boolean, datetime, text)"}[name]
        lines += [
            f"## {title}",
            "",
            "| Scenario | Server | In-process baseline | Ratio | Target | p50 / p95 / p99 ms | Errors |",
            "|---|---|---|---|---|---|---|",
            f"| 1 row, concurrency 1 | p50 {c1['p50']:.2f} ms | p50 {base_p50:.2f} ms | "
            f"{c1['p50'] / base_p50:.2f}× | ≤ 1.3× | {c1['p50']:.1f} / {c1['p95']:.1f} / {c1['p99']:.1f} | "
            f"{c1['errors']:.0f} |",
            f"| 1 row, concurrency 32 | {c32['throughput']:.0f} req/s | {base['rate']:.0f} calls/s sequential | "
            f"{c32['throughput'] / base['rate']:.2f}× | ≥ 2× {EARLIER_C32[name]} req/s (earlier), p99 ≤ 50 ms, "
            f"0 errors | {c32['p50']:.1f} / {c32['p95']:.1f} / {c32['p99']:.1f} | {c32['errors']:.0f} |",
            f"| 1 row, concurrency 32: the model's calls (from the server's /metrics) | "
            f"{c32['requests_per_call']:.1f} requests a call, {c32['call_ms']:.1f} ms a call, each worker's model "
            f"busy {c32['busy'] * 100:.0f} % of the run | p50 {base_p50:.2f} ms a one-row call alone | | | | |",
            f"| 1 row, concurrency 1: the model's call inside the worker (from the server's /metrics) | "
            f"{c1['call_ms']:.2f} ms a call (mean) | p50 {base_p50:.2f} ms, calls back to back | | | | |",
            f"| server's own cost, concurrency 1 (each run against the in-process p50 measured right after it) | "
            f"p50 {statistics.median(r['p50'] - r['in_process_p50'] for r in result['runs']['c1']):+.2f} ms | "
            f"p50 {c1['in_process_p50']:.2f} ms | | ≤ + 0.8 ms | | |",
            f"| server's own cost, concurrency 1, against the worker's model call made in-process (validated columns "
            f"to answers; each run against the p50 measured right after it) | p50 "
            f"{statistics.median(r['p50'] - r['served_call_p50'] for r in result['runs']['c1']):+.2f} ms | "
            f"p50 {c1['served_call_p50']:.2f} ms | | | | |",
            f"| 1 row, concurrency 1, against AutoGluon's own call (forests through joblib, features in DataFrames) | "
            f"p50 {c1['p50']:.2f} ms | p50 {base['autogluon_p50']:.2f} ms | {c1['p50'] / base['autogluon_p50']:.2f}× | "
            f"| | |",
            f"| V2 infer (JSON tensors), concurrency 1 | p50 {v1['p50']:.2f} ms | p50 {base_p50:.2f} ms | "
            f"{v1['p50'] / base_p50:.2f}× | | {v1['p50']:.1f} / {v1['p95']:.1f} / {v1['p99']:.1f} | "
            f"{v1['errors']:.0f} |",
            f"| V2 infer (JSON tensors), concurrency 32 | {v32['throughput']:.0f} req/s | "
            f"{c32['throughput']:.0f} req/s `/predict` | {v32['throughput'] / c32['throughput']:.2f}× | ≥ 0.9× | "
            f"{v32['p50']:.1f} / {v32['p95']:.1f} / {v32['p99']:.1f} | {v32['errors']:.0f} |",
            f"| 10,000 rows, JSON records (each run against the in-process rate measured right after it) | "
            f"{BIG / js['p50'] * 1000:.0f} rows/s | {big_rate(result, 'json'):.0f} rows/s | "
            f"{big_ratio(result, 'json'):.2f}× | ≥ 0.5× | "
            f"{js['p50']:.0f} / {js['p95']:.0f} / {js['p99']:.0f} | {js['errors']:.0f} |",
            f"| 10,000 rows, CSV (each run against the in-process rate measured right after it) | "
            f"{BIG / cs['p50'] * 1000:.0f} rows/s | {big_rate(result, 'csv'):.0f} rows/s | "
            f"{big_ratio(result, 'csv'):.2f}× | ≥ 0.7× | "
            f"{cs['p50']:.0f} / {cs['p95']:.0f} / {cs['p99']:.0f} | {cs['errors']:.0f} |",
        ]
        if "c1_traced" in runs:
            traced = runs["c1_traced"]
            lines.append(
                f"| 1 row, concurrency 1, tracing on (≥ {min(facts['exports'])} OTLP exports per run, local receiver) | "
                f"p50 {traced['p50']:.2f} ms | p50 {base_p50:.2f} ms | {traced['p50'] / base_p50:.2f}× | "
                f"tracing off: {c1['p50']:.2f} ms | {traced['p50']:.1f} / {traced['p95']:.1f} / {traced['p99']:.1f} | "
                f"{traced['errors']:.0f} |")
        lines.append("")
    lines += explanation_table(results["mixed"]["runs"], {})
    live1, live32 = median_of(facts["live_c1"]), median_of(facts["live_c32"])
    lines += [
        "## The stack's own ceiling and the long run",
        "",
        "| Scenario | req/s | p50 / p99 ms | Ratio | Target |",
        "|---|---|---|---|---|",
        f"| `GET /health/live`, concurrency 1 | {live1['throughput']:.0f} | {live1['p50']:.2f} / {live1['p99']:.2f} | | |",
        f"| `GET /health/live`, concurrency 32 | {live32['throughput']:.0f} | {live32['p50']:.2f} / "
        f"{live32['p99']:.2f} | {live32['throughput'] / live1['throughput']:.2f}× concurrency 1 | ≥ 1.5× |",
        "",
        f"Mixed model, `/predict`, one row, concurrency 32 for {LONG} s, worker recycling on as in production; "
        f"answered req/s per {WINDOW} s window, and the median of the last three windows over the first three "
        "(target ≥ 85 %):",
        "",
        "| Run | Windows (req/s) | Last 3 ÷ first 3 | Workers recycled during the run |",
        "|---|---|---|---|",
    ]
    for number, long in enumerate(results["mixed"]["runs"]["long"], 1):
        windows = long["windows"]
        held = statistics.median(windows[-3:]) / statistics.median(windows[:3]) if len(windows) >= 6 else float("nan")
        lines.append(f"| {number} | {', '.join(f'{w:.0f}' for w in windows)} | {held * 100:.0f} % | {long['recycled']:.0f} |")
    lines += [
        "",
        "## Reading the figures",
        "",
        "- The load generator, both workers and their batcher threads share the machine's two cores: at concurrency 32",
        "  the CPU is saturated, so latency there is queueing (mean latency ≈ 32 ÷ throughput). Micro-batching is what",
        "  lifts throughput above the sequential in-process rate; the p99 ≤ 50 ms target would need about 1,000 req/s",
        "  with a tight spread. With workers pinned to a core each (fourth stop of 2026-12-07), the iris model met",
        "  it in `make bench` (p99 48.5 ms at 1,848 req/s), the mixed model not (71 ms at 1,226 req/s).",
        "- What bounds concurrency 32 is each worker's model call: the row \"the model's calls\" shows each worker's",
        "  model busy nearly all the run, and the worker's rate is requests a call ÷ ms a call. Under load a call",
        "  takes two to three times its time alone, since the worker's request threads need the same GIL for their",
        "  own Python (about 1 ms a request) and the two cores are shared with the other worker and `hey`; more",
        "  threads, workers or batching wait do not change that (`make bench-knobs`).",
        "- Workers on CPUs of their own (2026-12-07, fourth stop): timed inside a worker at concurrency 32 (getrusage",
        "  around each call), an iris model call of a few rows took 1–2 ms at the median and 15–22 ms at p99, for",
        "  0.8–1.1 ms of CPU, with 2–3 involuntary context switches at the median and 21–27 at p99: the kernel",
        "  preempting and moving the worker's threads over the two cores shared with the other worker and `hey`, and",
        "  every GIL hand-off crossing cores. Each worker kept to one core (`AGSERVE_PIN_WORKERS=auto`, the default:",
        "  here 2 workers on 2 CPUs), taking turns with unpinned on one server, 3 rounds of 4 s: iris concurrency 32",
        "  1,369–1,494 → 1,634–1,888 req/s (p99 53–71 → 45–51 ms), mixed 1,005–1,140 → 1,203–1,444 req/s (p99 62–90",
        "  → 63–71 ms), iris concurrency 1 p50 1.1–1.2 → 1.0 ms; mixed concurrency 1 and `/health/live` moved within",
        "  their spread. `make bench-knobs` measures the default shape pinned and not.",
        "- Concurrency 1: the model's call inside a worker (its row above) takes longer than the same call made back",
        "  to back in-process, and not because of the server's code: on this machine any code runs slower after its",
        "  core has done something else for a while (caches cooled). Measured by hand in one process, 1,500 calls a",
        "  figure: the mixed model's one-row call 1.04 ms back to back, 1.2–1.5 ms with 0.5 ms of sleep between",
        "  calls, 1.7–1.8 ms with 2 ms; a plain Python and numpy workload 0.29 ms back to back, 0.44–0.57 ms with the",
        "  same gaps (spinning instead of sleeping removed it in one round of two). A server's model call always",
        "  follows other work, so part of the \"own cost\" against the back-to-back baseline is this.",
        "- The mixed model's call was mostly AutoGluon's fixed cost per call, the same for 1 to 64 rows: its feature",
        "  pipeline (every generator selecting and building DataFrames, each stage concatenating them: 6.9 ms of a",
        "  9.2 ms one-row call in-process on 2026-12-07) and LightGBM's conversion of the frame to its matrix (0.9 ms,",
        "  against 0.02 ms of prediction). On up to 16 rows the pipeline now runs in numpy columns",
        "  (`app/inference/generators.py`: 6.9 → 0.7 ms) and each booster gets the matrix lightgbm would have made",
        "  (`app/inference/boosters.py`): the call 9.2 → about 2 ms, the same answers to the bit. The in-process",
        "  baseline makes the same call, so \"own cost\" still compares like with like; the row \"against AutoGluon's own",
        "  call\" compares with the call as AutoGluon makes it.",
        "- Then (2026-12-07, second stop) AutoGluon's wrappers around the models were the larger part of the mixed",
        "  model's call: each model's `X[features]` (a label look-up and a take over 119 columns, 0.17 ms, when X",
        "  already holds them in order), the weighted ensemble reading its inputs back out of a frame, the trainer",
        "  sorting its model graph again. On up to 16 rows these go by position (`app/inference/wrappers.py`), category",
        "  codes and n-gram counts are looked up without pandas' and scikit-learn's per-call machinery, and forests",
        "  skip scikit-learn's validation of AutoGluon's float32 matrix: the baseline's one-row call, mixed 1.85 →",
        "  1.10 ms, iris 0.54 → 0.33 ms, the same answers to the bit; the baseline makes the same calls. The server",
        "  also no longer builds a DataFrame of a few validated rows for AutoGluon to take apart again: their columns",
        "  go to the pipeline and the predictor is called with `transform_features=False` on its output (the",
        "  baseline keeps AutoGluon's entry: `predict_proba` on a DataFrame, reused across its calls). gunicorn parses",
        "  requests with gunicorn_h1c's C parser (0.1-0.2 ms a request at concurrency 1 in interleaved runs).",
        "- Then (2026-12-07, fifth stop) what was left of the mixed model's call was frames built to be taken apart:",
        "  the pipeline's output frame (0.13 ms for 119 columns), LightGBM's copy and renaming of it and its matrix of",
        "  that, the weighted ensemble's frame of its base models' predictions. A plan made at load time",
        "  (`app/inference/ensembles.py`) now gives a LightGBM base model its matrix straight from the pipeline's",
        "  columns, a forest without categorical features its float32 matrix, and weighs the base models' arrays",
        "  with the ensemble's own function (any other base model gets the frame): the server's one-row call",
        "  (`predict_validated`) in-process, interleaved in one process (10 rounds), mixed 0.98 → 0.47 ms (1.46 →",
        "  0.72 ms in a slow phase of the machine), iris 0.23 → 0.13 ms, the same answers to the bit. The baseline",
        "  keeps AutoGluon's entry, so the server's own cost against it fell by that much; the row \"against the",
        "  worker's model call made in-process\" measures the server against its own call.",
        "- 10,000-row requests (2026-12-07, third stop): a CSV body's numeric cells were parsed by `float()` one by",
        "  one (9 ms of the iris request's 38 ms in-process); pyarrow now casts a numeric feature's column, rounding as",
        "  `float()` does (a cell it refuses goes to `float()` as before): 38 → 30 ms in-process. Inside a worker the",
        "  same requests took 3–7 ms longer than in-process: workers mapped every block of 1 MiB or more and gave",
        "  back freed memory past 128 KiB, so each request's buffers (orjson's 10 MiB parse buffer for the 840 KB",
        "  JSON body, the answer's encoding) were mapped, faulted in page by page (1,600 page faults in the answer's",
        "  encoding alone) and returned. Workers now keep up to 16 MiB of freed memory in each of two malloc arenas",
        "  (blocks of 16 MiB and more are still mapped and returned): at concurrency 1, iris JSON 40 → 36 ms, CSV",
        "  34 → 31 ms; 13–40 MiB more resident per worker after such runs. The iris model takes 19–20 ms for",
        "  10,000 rows, so CSV at 0.7× would leave the server 8 ms for HTTP, parsing, validation, the prediction",
        "  log and the answer's 700 KB of JSON.",
        "- Where a 10,000-row iris CSV request's time goes inside a worker (2026-12-07, seventh stop; py-spy, one",
        "  worker's threads sampled at 250 Hz for 8 s at concurrency 1, 36 ms a request): the forest 50 %, the",
        "  prediction log 12 % (the probabilities' JSON, shared with the answer, 7 %; writing the line 5 %), reading",
        "  the CSV 10 % (each cell's text 4 %, the numbers pyarrow casts 2.5 %), the monitoring thread's flush 11 %",
        "  (each answer's outputs kept for feedback, written to SQLite), Flask and gunicorn the rest. No one part",
        "  holds the 6 ms that CSV at 0.7× asks for. Leaving the numeric cells' text unread until the slow path",
        "  needs it (4 % of the samples) would keep pyarrow's buffers past the point where the worker hands them",
        "  back to the system, so it was not done.",
        "- The concurrency-32 tail is not the uneven split of `hey`'s kept-alive connections between the workers",
        "  (18/14 and 20/12 here): workers made to accept only up to an equal share held 16/16, and the iris p99",
        "  stayed at 52–61 ms. Switching TCP_CORK off (which sends the answer inside the call) without the GIL, via",
        "  ctypes, moved nothing either in interleaved runs (3 rounds). Neither was kept.",
        "- Which thread serves a request matters: gunicorn's thread pool woke its idle threads in turn, so at",
        "  concurrency 1 each request ran on another thread and went through the worker's poller (two thread",
        "  hand-offs); a one-row `predict_proba` took 8.7 ms there against 7.4 ms on one thread (iris). The worker",
        "  (`app/workers.py`) now gives a request to the thread idle the shortest time, and a kept-alive client's next",
        "  request, when it arrives within 2 ms and no other request waits, to the thread that answered it. Interleaved",
        "  A/B before the change (3 runs each, concurrency 1): iris p50 11.1 → 8.2 ms, mixed 14.2 → 12.5 ms,",
        "  `/health/live` 0.8 → 0.5 ms; concurrency 32 (2 runs each): iris 620 → 696 req/s, mixed 512 → 588 req/s.",
        "- The iris model is a 100-tree random forest: scikit-learn calls each tree through joblib, which wraps every",
        "  call (configuration context, warning filters); AutoGluon's own one-row `predict_proba` took 6.6 ms of which",
        "  4.9 ms were that wrapping. Each worker now calls a one-thread forest's trees in turn (same order, same sums:",
        "  the same answers to the bit), and so does the in-process baseline, so the \"own cost\" row still compares",
        "  like with like; the row \"against AutoGluon's own call\" compares with the call as AutoGluon makes it.",
        "  Interleaved A/B (2 runs each): iris concurrency 1 p50 8.2 → 3.2 ms, concurrency 32 733 → 1,036 req/s;",
        "  the mixed model (LightGBM) is unchanged. Then each tree's leaf values are read directly (`tree_.predict`),",
        "  without each tree checking again that it is fitted and how many features it gets (scikit-learn's tags",
        "  machinery, about half of what was left): interleaved A/B (2 runs each), iris concurrency 1 p50 4.2–4.5 →",
        "  3.3–3.4 ms, concurrency 32 739–826 → 853–921 req/s, p99 103–111 → 81–85 ms (a busy moment of the machine).",
        "  Then up to 16 rows walk all trees at once with numpy (`app/inference/forests.py`): one row in-process",
        "  1.68–1.79 → 1.10–1.19 ms (interleaved, 2 runs each); at concurrency 32 the iris model's calls still take",
        "  about 11 ms under load (the row \"the model's calls\"), so throughput there moved within the spread.",
        "- Before the forest change, timed inside the worker at concurrency 1 (iris): `predict_proba` 7.1–7.7 ms",
        "  against 6.5 ms in-process on the same frame, the rest of the request about 1.2 ms. The workers' background",
        "  threads (key re-confirmation every 0.25 s, monitoring flush every 1 s, version watch every 2 s) raised p90",
        "  (8.6 ms with them off, 11 ms on) but not p50.",
        "- `/health/live`: concurrency 32 ÷ concurrency 1 fell below the 1.5× target when concurrency 1 got faster",
        "  (the worker changes of 2026-11-28), not because 32 got slower. Interleaved A/B (2 runs each):",
        "  concurrency 1 1,371 → 2,250 req/s, concurrency 32 2,888 → 3,069 req/s; at concurrency 32 the two workers use",
        "  1.5 cores and `hey` the rest of the machine.",
        "- Explanations beside predictions: the predictions' p99 with explanations at their limit stayed where it was",
        "  (72 ms before the worker changes, 71 and 76 ms after, `bench/run.py --explanations`, 3 runs each), but",
        "  predictions alone got faster (p99 64 → 54 and 50 ms), so the ratio rose (+13 % → +30 % and +53 % in those",
        "  runs). Refused explanations (503 at the limit) also come back three times as fast, and `hey`",
        "  resends each at once. With workers pinned to a core each, the explanations' C code can no longer run on",
        "  the other core beside the worker's Python; alternating runs (`--explanations`, 1 run each, 2 rounds) gave",
        "  the predictions' p99 +22 % and +70 % pinned, +46 % and +94 % not: no cost shown, within the spread.",
        "- Workers share one listening socket, so the kernel does not spread connections evenly; `reuse_port` (one",
        "  socket per worker) gave no better p99 here and resets the connections queued on a worker when it is",
        "  recycled, so it is not used. Instead (2026-12-07, sixth stop) a worker accepts no more than its share of",
        "  the open connections and answers close a connection once it is `AGSERVE_MAX_CONNECTION_AGE` (5 s) old",
        "  (docs/deployment.md). Before, a recycled worker's clients reconnected to the other worker and stayed:",
        "  `hey`'s 32 connections sat 32 to 0 on one worker for the rest of the run (counted per worker from",
        "  /proc), and the long run fell to half after each recycle. Taking turns on one machine, 60 s at",
        "  concurrency 32 with `AGSERVE_MAX_REQUESTS=25000` (two or three recycles a run), last three windows over",
        "  the first three: 52 % and 58 % before, 96 % and 99 % after; with recycling off, 30 s runs moved within",
        "  their spread (1,095–1,513 req/s before, 1,059–1,559 after).",
        "- p95/p99 of the 10,000-row scenarios are over 10 requests per run (p95 = p99 = the slowest).",
        "- \"Tracing on\" is a server of its own in each run, exporting every request's spans over OTLP/HTTP to a",
        "  receiver in the bench process (`AGSERVE_OTLP_ENDPOINT`); every other row runs with tracing off, the default,",
        "  which builds nothing of OpenTelemetry ([tracing](docs/tracing.md)).",
        "- Monitoring (drift counts, each answer recorded for feedback) is on, as in production. Its cost at",
        "  concurrency 1 is within run-to-run noise: an A/B on the mixed model (two 6-second runs each, same server",
        "  set-up) gave p50 7.6 / 7.6 ms with it and 7.4 / 7.3 ms without; `AGSERVE_MONITORING=false` removes it. The",
        "  mixed model's single-row ratio sits at the 1.3× target, on either side of it from run to run (see the table).",
        "",
    ]
    rss = [statistics.median(values) for values in zip(*facts["rss"])]
    lines += [
        "## Start-up and memory",
        "",
        f"- From `gunicorn` start to `/health/ready` with both workers loaded (2 models each): "
        f"{statistics.median(ready_times):.1f} s (median of {len(ready_times)}).",
        f"- Resident memory per worker after the runs: {', '.join(f'{r:.0f} MiB' for r in rss)}.",
        "",
        "Rerun with `make bench` (`BENCH_RUNS`, `BENCH_SECONDS` to change the counts). Ratios compare the server to the",
        "in-process baseline measured in the same run; absolute figures depend on the machine.",
    ]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines) + "\n")
    log("wrote BENCHMARKS.md")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--explanations"]:
        explanations_only(dict(setting.split("=", 1) for setting in sys.argv[2:]))
    else:
        main()
