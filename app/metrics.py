"""Prometheus metrics, correct across gunicorn workers (prometheus_client's multiprocess mode).

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at AGSERVE_METRICS_DIR, empties it when the master starts and marks
dead workers' files, before any worker imports prometheus_client. Without gunicorn (tests, flask run) metrics live in
this process only.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)
from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("agserve.metrics")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

REQUESTS = Counter("agserve_requests_total", "HTTP requests answered.", ["route", "model", "version", "status"])
REQUEST_SECONDS = Histogram("agserve_request_seconds", "Whole-request latency.", ["route"], buckets=LATENCY_BUCKETS)
MODEL_CALL_SECONDS = Histogram("agserve_model_call_seconds", "Latency of one model call (one batch).",
                               ["model", "version"], buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("agserve_batch_rows", "Rows per model call.", ["model"], buckets=BATCH_BUCKETS)
BATCH_REQUESTS = Histogram("agserve_batch_requests", "Requests sharing one model call.", ["model"],
                           buckets=BATCH_BUCKETS)
ROWS_PREDICTED = Counter("agserve_rows_predicted_total", "Rows predicted.", ["model", "version"])
PREDICTED_CLASSES = Counter("agserve_predicted_class_total", "Predicted labels of classifiers.",
                            ["model", "version", "label"])
PREDICTED_VALUES = Histogram("agserve_prediction_value", "Predicted values of regressors (median for quantile).",
                             ["model", "version"],
                             buckets=(-1e6, -1e4, -1e2, -10, -1, 0, 1, 10, 1e2, 1e4, 1e6))
CACHE_ROWS = Counter("agserve_cache_rows_total", "Rows looked up in the prediction cache.", ["model", "result"])
REDIS_UP = Gauge("agserve_redis_up", "1 while every live worker reaches Redis, 0 while any is serving without it "
                 "(absent without Redis).", ["url"], multiprocess_mode="livemin")
REDIS_ERRORS = Counter("agserve_redis_errors_total", "Redis calls that failed or timed out.", ["operation"])
RATE_LIMITED = Counter("agserve_rate_limited_total", "Requests refused with 429.", ["scope"])
RECORDS_LOST = Counter("agserve_records_lost_total", "Requests whose record a store could not keep (disk full, I/O "
                       "error, a backlog past its bound).", ["store"])
WORKER_STARTS = Counter("agserve_worker_starts_total", "Gunicorn workers started (first start, crash or timeout "
                        "replacement, recycling after MAX_REQUESTS, reload).")
SLOW_CLIENTS = Counter("agserve_slow_clients_total", "Requests answered 408 because their headers or body arrived "
                       "too slowly (AGSERVE_HEADER_TIMEOUT, AGSERVE_BODY_TIMEOUT, AGSERVE_BODY_MIN_RATE).", ["part"])
VALIDATION_FAILURES = Counter("agserve_validation_failures_total", "Requests refused by a model's input schema.",
                              ["model"])


class LostRecords:
    """Counts the records a store could not keep, and logs it once per interval (with how many since), not once per
    request: a full disk must not also flood the logs."""

    def __init__(self, store: str, logger: logging.Logger, interval: float = 60.0):
        self.store, self.log, self.interval = store, logger, interval
        RECORDS_LOST.labels(store)  # the series exists at 0 from the start, so rules see its first loss
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._since = 0

    def __call__(self, count: int, message: str, **extra) -> None:
        RECORDS_LOST.labels(self.store).inc(count)
        with self._lock:
            self._since += count
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            lost, self._since, self._last = self._since, 0, now
        self.log.error(message, extra={**extra, "store": self.store, "records_lost": lost})


def records_lost(metrics_dir: str) -> dict[str, float]:
    """Records lost so far by each store, summed over every worker."""
    return {sample.labels["store"]: sample.value for family in _registry(metrics_dir).collect()
            if family.name == "agserve_records_lost" for sample in family.samples
            if sample.name == "agserve_records_lost_total"}


def observe_batch(model: str, version: str, seconds: float, rows: int, requests: int) -> None:
    MODEL_CALL_SECONDS.labels(model, version).observe(seconds)
    BATCH_ROWS.labels(model).observe(rows)
    BATCH_REQUESTS.labels(model).observe(requests)
    ROWS_PREDICTED.labels(model, version).inc(rows)


def observe_cache(model: str, hits: int, misses: int) -> None:
    if hits:
        CACHE_ROWS.labels(model, "hit").inc(hits)
    if misses:
        CACHE_ROWS.labels(model, "miss").inc(misses)


def observe_predictions(model: str, version: str, problem_type: str, predictions: list) -> None:
    if problem_type in ("binary", "multiclass"):
        counts: dict[str, int] = {}
        for label, count in collections.Counter(predictions).items():  # counted at C speed, named once per class
            counts[str(label)] = counts.get(str(label), 0) + count
        for label, count in counts.items():
            PREDICTED_CLASSES.labels(model, version, label).inc(count)
    else:
        histogram = PREDICTED_VALUES.labels(model, version)
        for value in predictions:
            value = value.get("0.5") if isinstance(value, dict) else value
            if isinstance(value, float) and value == value:
                histogram.observe(value)


def _registry(metrics_dir: str):
    """Every worker's metrics merged (multiprocess mode), or this process's when not under gunicorn."""
    if not metrics_dir:
        return PROCESS_REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    return registry


def exposition(metrics_dir: str, extra: list | None = None) -> tuple[bytes, str]:
    """The text exposition and its content type; extra collectors are read at scrape time."""
    body = generate_latest(_registry(metrics_dir))
    if extra:
        registry = CollectorRegistry()
        for collector in extra:
            registry.register(collector)
        body += generate_latest(registry)
    return body, CONTENT_TYPE_LATEST


class MonitorCollector:
    """Drift, live quality and firing alerts, read from the shared monitoring store when Prometheus scrapes
    (so they are the same whichever worker answers, with no per-worker gauge files)."""

    def __init__(self, monitor, registry):
        self.monitor, self.registry = monitor, registry

    def collect(self):
        drift = GaugeMetricFamily("agserve_drift", "Input drift of a feature over the sliding window (statistic: psi, "
                                  "unseen_share, out_of_range_share, null_share_change).",
                                  labels=["model", "version", "feature", "statistic"])
        drifted = GaugeMetricFamily("agserve_drift_features_flagged", "Features over a drift threshold.",
                                    labels=["model", "version"])
        rows = GaugeMetricFamily("agserve_drift_window_rows", "Rows in the drift window.", labels=["model", "version"])
        live = GaugeMetricFamily("agserve_live_score", "Eval metric on feedback over the quality window "
                                 "(AutoGluon's sign: higher is better), beside the validation score.",
                                 labels=["model", "version", "metric", "source"])
        outcomes = GaugeMetricFamily("agserve_feedback_outcomes", "Outcomes in the quality window.",
                                     labels=["model", "version"])
        for name, slot in sorted(self.registry.slots.items()):
            model = slot.model
            if model is None:
                continue
            try:
                report, quality = self.monitor.drift(model), self.monitor.quality(model)
            except Exception:  # a scrape must never fail because one model's monitoring did
                log.exception("monitoring metrics failed", extra={"model": name})
                continue
            rows.add_metric([name, model.version], report["rows"])
            drifted.add_metric([name, model.version], len(report["drifted_features"]))
            for feature, entry in report["features"].items():
                for statistic in ("psi", "unseen_share", "out_of_range_share", "null_share_change"):
                    if entry[statistic] is not None:
                        drift.add_metric([name, model.version, feature, statistic], entry[statistic])
            outcomes.add_metric([name, model.version], quality["outcomes"])
            for source in ("live", "validation"):
                value = quality[f"{source}_eval_metric"]
                if value is not None:
                    live.add_metric([name, model.version, quality["eval_metric"], source], value)
        firing = GaugeMetricFamily("agserve_alerts_firing", "Conditions of an alert rule firing now.", labels=["rule"])
        counts: dict[str, int] = {}
        try:
            for entry in self.monitor.store.alerts(limit=0)["firing"]:
                counts[entry["rule"]] = counts.get(entry["rule"], 0) + 1
        except Exception:  # the database unreachable: the scrape still answers, without this gauge
            log.exception("alert state could not be read for metrics")
            return [drift, drifted, rows, live, outcomes]
        for rule in (self.monitor.alert_config.rules if self.monitor.alert_config else []):
            firing.add_metric([rule.name], counts.get(rule.name, 0))
        return [drift, drifted, rows, live, outcomes, firing]


class ServerCollector:
    """The database's reachability and every gunicorn process's memory and CPU, read when Prometheus scrapes."""

    def __init__(self, database, under_gunicorn: bool):
        self.database, self.under_gunicorn = database, under_gunicorn

    def collect(self):
        import psutil
        import sqlalchemy as sa

        up = GaugeMetricFamily("agserve_database_up", "1 when this scrape's SELECT 1 reached the database (keys, "
                               "audit, activation), 0 when it did not.")
        try:
            with self.database.reading() as connection:
                connection.execute(sa.text("SELECT 1"))
            up.add_metric([], 1)
        except Exception:  # unreachable, timed out, locked: all mean "down" to an alert
            log.warning("database check for /metrics failed", exc_info=True)
            up.add_metric([], 0)
        rss = GaugeMetricFamily("agserve_process_resident_bytes", "Resident memory of a gunicorn process.",
                                labels=["role", "pid"])
        cpu = CounterMetricFamily("agserve_process_cpu_seconds", "CPU time (user + system) of a gunicorn process.",
                                  labels=["role", "pid"])
        me = psutil.Process()
        master = me.parent() if self.under_gunicorn else None
        processes = [("master", master)] + [("worker", p) for p in master.children()] if master else [("worker", me)]
        for role, process in processes:
            try:
                with process.oneshot():
                    memory, times = process.memory_info().rss, process.cpu_times()
            except psutil.Error:  # a worker that exited between listing and reading
                continue
            rss.add_metric([role, str(process.pid)], memory)
            cpu.add_metric([role, str(process.pid)], times.user + times.system)
        return [up, rss, cpu]


def requests_served(metrics_dir: str) -> int:
    """All requests answered so far, summed over every worker."""
    return int(sum(sample.value for family in _registry(metrics_dir).collect() if family.name == "agserve_requests"
                   for sample in family.samples if sample.name == "agserve_requests_total"))
