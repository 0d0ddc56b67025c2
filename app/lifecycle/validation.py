"""The gate a version must pass before it may serve: it loads, its checksums hold, it scores, it is stable, it is fast.

The report is written beside the version (validation.json) and tied to its manifest, so promote can trust it.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

from app.frames import records
from app.inference import loading
from app.inference.errors import ModelError
from app.inference.repository import ModelVersion

REPORT_FILE = "validation.json"
POLICY_FILE = "policy.json"
LATENCY_SAMPLES = 50
STABILITY_ROWS = 1000


@dataclass
class Check:
    name: str
    passed: bool
    value: Any = None
    limit: Any = None
    detail: str = ""


@dataclass
class Report:
    name: str
    version: str
    manifest_sha256: str
    rows: int
    checks: list[Check] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def table(self) -> str:
        """A readable table of the checks, one per line."""
        rows = [("CHECK", "RESULT", "VALUE", "LIMIT", "DETAIL")]
        for check in self.checks:
            rows.append((check.name, "pass" if check.passed else "FAIL", _fmt(check.value), _fmt(check.limit),
                         check.detail))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
        verdict = "PASSED" if self.passed else "FAILED"
        return "\n".join(lines + [f"{self.name} version {self.version}: validation {verdict}"])


def manifest_digest(version: ModelVersion) -> str:
    return hashlib.sha256((version.path / "manifest.json").read_bytes()).hexdigest()


def read_policy(version: ModelVersion) -> dict[str, Any]:
    """Thresholds from models/<name>/policy.json: {"min": {metric: value}, "max_latency_ms": ms}."""
    path = version.path.parent / POLICY_FILE
    if not path.is_file():
        return {}
    policy = json.loads(path.read_text())
    if not isinstance(policy, dict) or set(policy) - {"min", "max_latency_ms"}:
        raise ValueError(f"{path}: a policy has only 'min' and 'max_latency_ms'")
    return policy


def validate(version: ModelVersion, data: pd.DataFrame, settings: Mapping[str, Any],
             minimums: Mapping[str, float] | None = None, max_latency_ms: float | None = None) -> Report:
    """Run every check on version with data (features and label); write and return the report."""
    policy = read_policy(version)
    minimums = {**policy.get("min", {}), **(minimums or {})}
    max_latency_ms = max_latency_ms if max_latency_ms is not None else policy.get("max_latency_ms")
    report = Report(version.name, version.version, manifest_digest(version), len(data))

    started = time.perf_counter()
    try:
        model, facts = loading.load(version, settings)
    except ModelError as exc:
        report.checks.append(Check("loads (checksums, versions)", False, detail=exc.message))
        return _write(version, report)
    except Exception as exc:  # AutoGluon's own failure to unpickle or predict
        report.checks.append(Check("loads (checksums, versions)", False, detail=f"{type(exc).__name__}: {exc}"))
        return _write(version, report)
    report.checks.append(Check("loads (checksums, versions)", True, round(time.perf_counter() - started, 2),
                               detail=f"persisted {', '.join(facts['persisted']) or 'nothing'}"))

    label = model.manifest["label"]
    features = [f["name"] for f in model.features]
    missing = [f for f in features if f not in data.columns]
    if missing:
        report.checks.append(Check("data has the features", False, detail=f"missing: {', '.join(missing)}"))
        return _write(version, report)

    if label in data.columns:
        scores = model.predictor.evaluate(data[data[label].notna()], silent=True)
        for metric, minimum in sorted(minimums.items()):
            value = scores.get(metric)
            if value is None:
                report.checks.append(Check(f"score {metric}", False, limit=f">= {minimum}",
                                           detail=f"unknown metric; available: {', '.join(sorted(scores))}"))
            else:
                report.checks.append(Check(f"score {metric}", value >= minimum, round(float(value), 6),
                                           f">= {minimum}", "higher is better (losses are negative)"))
        if not minimums:
            report.checks.append(Check(f"score {model.manifest['eval_metric']}", True,
                                       round(float(scores[model.manifest['eval_metric']]), 6),
                                       detail="no threshold set"))
    elif minimums:
        report.checks.append(Check("scores", False, detail=f"the data has no label column {label!r}"))

    rows = records(data[features].head(STABILITY_ROWS))
    first, second = model.predict(rows), model.predict(rows)
    same = first.predictions == second.predictions and first.probabilities == second.probabilities
    report.checks.append(Check("stable (same rows twice, same answers)", same, len(rows)))
    values = [p for row in (first.probabilities or []) for p in row.values()]
    values += [v for v in first.predictions if isinstance(v, float)]
    values += [v for row in first.predictions if isinstance(row, dict) for v in row.values()]
    nan = sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))
    report.checks.append(Check("no NaN in outputs", nan == 0, nan))

    timings = []
    for row in (rows * LATENCY_SAMPLES)[:LATENCY_SAMPLES]:
        tick = time.perf_counter()
        model.predict([row])
        timings.append((time.perf_counter() - tick) * 1000)
    median = round(statistics.median(timings), 2)
    limit = f"<= {max_latency_ms}" if max_latency_ms is not None else None
    report.checks.append(Check("single-row latency p50 ms", max_latency_ms is None or median <= max_latency_ms,
                               median, limit, f"p95 {round(sorted(timings)[int(0.95 * len(timings)) - 1], 2)} ms"))
    return _write(version, report)


def _write(version: ModelVersion, report: Report) -> Report:
    (version.path / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def read_report(version: ModelVersion) -> dict[str, Any] | None:
    path = version.path / REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any) -> str:
    return "" if value is None else str(value)
