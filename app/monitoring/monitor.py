"""Monitor: one worker's view of monitoring, tying store, collector, reports and alerts together."""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Mapping

from app import metrics
from app.db import Database, sqlite_file
from app.monitoring.alerts import AlertConfig, Evaluator, Observation, Rule, run_evaluator
from app.monitoring.collector import Collector, window_summary
from app.monitoring.drift import Thresholds, drift_report, profiles
from app.monitoring.leader import leader_for
from app.monitoring.quality import quality_report
from app.monitoring.store import BUCKET_SECONDS, MonitorStore

QUALITY_MAX_OUTCOMES = 100_000  # the newest outcomes scored at most, so a report stays quick


def monitoring_database(settings: Mapping[str, Any], database: Database) -> Database:
    """The main database; on one machine, AGSERVE_MONITOR_DB may name a SQLite file of its own instead."""
    if not settings["MONITOR_DB"]:
        return database
    return sqlite_file(settings["MONITOR_DB"], settings["DATABASE_TIMEOUT"])


class Monitor:
    def __init__(self, settings: Mapping[str, Any], registry, database: Database, replica: str = "",
                 alert_config: AlertConfig | None = None):
        self.registry = registry
        self.store = MonitorStore(monitoring_database(settings, database), replica)
        self.collector = Collector(self.store, settings["MONITOR_FLUSH_SECONDS"])
        self.thresholds = Thresholds(settings["DRIFT_PSI_THRESHOLD"], settings["DRIFT_SHARE_THRESHOLD"],
                                     settings["DRIFT_MIN_ROWS"])
        self.drift_window = settings["DRIFT_WINDOW_SECONDS"]
        self.quality_window = settings["QUALITY_WINDOW_SECONDS"]
        self.retention = settings["FEEDBACK_RETENTION_HOURS"] * 3600
        self.alert_interval = settings["ALERT_INTERVAL"]
        self.alert_config = alert_config
        self.evaluator = Evaluator(self.store, alert_config, self.observe) if alert_config else None
        self.metrics_dir = settings["METRICS_DIR"]
        self._lost_history: dict[float, deque] = {}  # per window: (time, totals) at each evaluation

    def start(self) -> None:
        """Start this worker's flush thread and its bid to lead evaluation and clean-up."""
        self.collector.start()
        run_evaluator(self.evaluator, leader_for(self.store.database), self.alert_interval, self.prune)

    def prune(self) -> None:
        now = time.time()
        rules = self.alert_config.rules if self.alert_config else []
        longest = max([self.drift_window] + [r.window_seconds for r in rules])
        cooldown = max([0.0] + [r.cooldown_seconds for r in rules])
        self.store.prune(now - longest - BUCKET_SECONDS, now - self.retention, now - cooldown)

    # --- reports -------------------------------------------------------------------------------------------
    def drift(self, model) -> dict[str, Any]:
        """Drift of the version a worker serves, over the sliding window, from every worker's inputs."""
        self.collector.flush()  # this worker's last second counts too
        feature_profiles = profiles(model.manifest)
        cells = self.store.drift_cells(model.name, model.version, time.time() - self.drift_window)
        report = drift_report(feature_profiles, cells, self.thresholds)
        note = None if feature_profiles else "this version was imported without reference data: nothing to compare"
        return {"model": model.name, "version": model.version, "window_seconds": self.drift_window, "note": note,
                **report}

    def quality(self, model) -> dict[str, Any]:
        self.collector.flush()
        joined = self.store.joined(model.name, model.version, time.time() - self.quality_window,
                                   QUALITY_MAX_OUTCOMES)
        return quality_report(model, joined, self.quality_window)

    def traffic(self, window_seconds: float, model: str | None = None) -> dict[str, Any]:
        self.collector.flush()
        return window_summary(self.store.traffic(time.time() - window_seconds, model))

    # --- feedback ------------------------------------------------------------------------------------------
    def find_predictions(self, request_ids: set[str]) -> dict[str, dict[str, Any]]:
        """The recorded outputs of requests, answered by any worker of any replica. An answer is written by its
        worker's next flush: ids not found yet get one wait of two flush intervals for it (then 404: retry)."""
        found = self.store.predictions(request_ids)
        if len(found) < len(request_ids):
            self.collector.flush()
            deadline = time.monotonic() + 2 * self.collector.flush_seconds + 0.5
            while len(found) < len(request_ids) and time.monotonic() < deadline:
                time.sleep(0.1)
                found.update(self.store.predictions(request_ids - set(found)))
        return found

    def clock(self) -> float:
        return self.collector.clock()

    def record_outcomes(self, outcomes: Iterable[tuple]) -> None:
        self.store.add_outcomes(outcomes)

    # --- what alert rules see ------------------------------------------------------------------------------
    def observe(self, rule: Rule) -> list[Observation]:
        if rule.metric == "records_lost":
            return self._records_lost(rule.window_seconds)
        if rule.metric in ("error_rate", "p95_latency_ms"):
            summary = window_summary(self.store.traffic(time.time() - rule.window_seconds, rule.model or None))
            value = summary[rule.metric]
            return [] if value is None else [(rule.model or "all requests", value, summary["requests"])]
        observations = []
        for name, slot in self.registry.slots.items():
            if slot.model is None or (rule.model and rule.model != name):
                continue
            if rule.metric.startswith("drift_"):
                statistic = rule.metric[len("drift_"):]
                report = self.drift(slot.model)
                for feature, entry in report["features"].items():
                    if entry.get(statistic) is not None:  # too few rows to judge counts as none
                        rows = entry["rows"] if entry["rows"] >= self.thresholds.min_rows else 0
                        observations.append((f"{name}/{feature}", entry[statistic], rows))
            else:
                report = self.quality(slot.model)
                live, validation = report["live_eval_metric"], report["validation_eval_metric"]
                if rule.metric == "live_metric" and live is not None:
                    observations.append((name, live, report["outcomes"]))
                elif rule.metric == "live_metric_drop" and live is not None and validation is not None:
                    observations.append((name, validation - live, report["outcomes"]))
        return observations

    def _records_lost(self, window_seconds: float) -> list[Observation]:
        """Records lost per store over the window, from the counters every worker shares (kept on tmpfs, so they
        still count when the disk of the stores is full); before the first window has passed, since the start."""
        now, totals = time.time(), metrics.records_lost(self.metrics_dir)
        history = self._lost_history.setdefault(window_seconds, deque())
        history.append((now, totals))
        while len(history) > 1 and history[1][0] <= now - window_seconds:
            history.popleft()
        baseline = history[0][1] if history[0][0] <= now - window_seconds else {}
        lost = {store: total - baseline.get(store, 0) for store, total in totals.items()}
        return [(store, count, int(count)) for store, count in sorted(lost.items())]
