"""Each worker's collector: requests note what they did in memory, and a thread writes it to the store.

The request path only appends to a list; drift counting, encoding and the database write happen in the flush
thread, once a second by default (so feedback can join an answer, on any replica, about a second after it was sent). A killed worker loses at most its last unflushed second of monitoring data
(the prediction log, written before each answer, is the durable record).
"""
from __future__ import annotations

import atexit
import bisect
import logging
import threading
import time
from typing import Any, Callable

import orjson

from app.inference.tables import merge_columns
from app.metrics import LostRecords
from app.monitoring.drift import FeatureProfile, count_columns, profiles
from app.monitoring.store import MonitorStore, bucket_of

log = logging.getLogger("agserve.monitoring")
LATENCY_BINS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
                   5000, 10000, 30000)  # upper edges; one more bin for anything slower
MAX_PENDING_ROWS = 200_000  # beyond this the store is not keeping up: drop and say so, never grow without bound


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Collector:
    def __init__(self, store: MonitorStore, flush_seconds: float = 1.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._traffic: dict[tuple, int] = {}
        self._pending: list[tuple] = []
        self._pending_rows = 0
        self.dropped_rows = 0
        self.failing = False  # the last write to the store failed (the "refuse" policy stops answering then)
        self._lost = LostRecords("monitoring", log)
        self._profiles: dict[tuple[str, str], dict[str, FeatureProfile]] = {}
        self._thread: threading.Thread | None = None

    # --- called by requests: append only -----------------------------------------------------------------------
    def observe_request(self, model: str, status: int, seconds: float) -> None:
        key = (bucket_of(self.clock()), model, status_class(status),
               bisect.bisect_left(LATENCY_BINS_MS, seconds * 1000))
        with self._lock:
            self._traffic[key] = self._traffic.get(key, 0) + 1

    def observe_prediction(self, request_id: str, model, result) -> None:
        """model: the ServedModel that answered; result: its Prediction, with the validated inputs."""
        rows = len(result.predictions)
        with self._lock:
            full = self._pending_rows + rows > MAX_PENDING_ROWS
            if full:
                self.dropped_rows += rows
            else:
                self._pending.append((self.clock(), request_id, model, result))
                self._pending_rows += rows
        if full:
            self._lost(1, "monitoring backlog full: records are being lost", request_id=request_id)

    # --- the flush thread --------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything noted so far; on failure the data is dropped and logged (monitoring never blocks)."""
        with self._flush_lock:
            with self._lock:
                traffic, self._traffic = self._traffic, {}
                pending, self._pending, self._pending_rows = self._pending, [], 0
            if not traffic and not pending:
                return
            drift: dict[tuple, int] = {}
            groups: dict[tuple, list] = {}  # one count per model version and bucket, not per request
            predictions = []
            for at, request_id, model, result in pending:
                if result.inputs is not None:  # every answer of the data plane carries its validated inputs
                    groups.setdefault((model.name, model.version, bucket_of(at)), [model]).append(result.inputs)
                outputs = orjson.dumps({"predictions": result.predictions,
                                        "probabilities": result.probabilities_json()},
                                       option=orjson.OPT_SERIALIZE_NUMPY)
                predictions.append((request_id, at, model.name, model.version, len(result.predictions), outputs))
            for key, (model, *inputs) in groups.items():
                feature_profiles = self._profiles_of(model)
                kinds = {name: profile.kind for name, profile in feature_profiles.items()}
                columns = inputs[0] if len(inputs) == 1 else merge_columns(inputs, kinds)
                for (feature, cell), count in count_columns(feature_profiles, columns).items():
                    drift[(*key, feature, cell)] = count
            try:
                self.store.add([(*k, v) for k, v in traffic.items()], [(*k, v) for k, v in drift.items()],
                               predictions)
            except Exception as exc:  # the database unreachable, or SQLite's "database or disk is full"
                self.failing = True
                self._lost(max(len(pending), sum(traffic.values())), "monitoring data could not be written: records are being lost",
                           error=f"{type(exc).__name__}: {exc}", traffic_cells=len(traffic))
            else:
                self.failing = False

    def _profiles_of(self, model) -> dict[str, FeatureProfile]:
        key = (model.name, model.version)
        if key not in self._profiles:
            self._profiles[key] = profiles(model.manifest)
        return self._profiles[key]

    def start(self) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(self.flush_seconds)
                try:
                    self.flush()
                except Exception:  # keep collecting whatever happens
                    log.exception("monitoring flush failed")

        self._thread = threading.Thread(target=loop, name="agserve-monitor-flush", daemon=True)
        self._thread.start()
        atexit.register(self.flush)  # a graceful worker exit writes its last second too


def sliding_p95(traffic: list[tuple[str, int, int]]) -> float | None:
    """The upper edge (ms) of the latency bin holding the 95th percentile of the counted requests."""
    counts: dict[int, int] = {}
    for _, latency_bin, count in traffic:
        counts[latency_bin] = counts.get(latency_bin, 0) + count
    total = sum(counts.values())
    if not total:
        return None
    seen = 0
    for latency_bin in sorted(counts):
        seen += counts[latency_bin]
        if seen >= 0.95 * total:
            return float(LATENCY_BINS_MS[latency_bin]) if latency_bin < len(LATENCY_BINS_MS) else float("inf")
    return None  # unreachable


def error_rate(traffic: list[tuple[str, int, int]]) -> tuple[float | None, int]:
    """Share of 5xx answers, and the number of requests it is taken over."""
    total = sum(count for _, _, count in traffic)
    errors = sum(count for status, _, count in traffic if status == "5xx")
    return (errors / total if total else None), total


def window_summary(traffic: list[tuple[str, int, int]]) -> dict[str, Any]:
    rate, total = error_rate(traffic)
    return {"requests": total, "error_rate": rate, "p95_latency_ms": sliding_p95(traffic)}
