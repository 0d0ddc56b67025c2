"""Input drift: live inputs counted into the reference's cells, then compared with the manifest's statistics.

Counting is cheap and additive (so every worker's counts can be summed in the shared store); the report turns
summed counts into per-feature statistics:
- psi: population stability index over the reference bins (numeric: deciles; category/boolean: the reference's
  categories plus one cell for everything else);
- unseen_share: share of present values that are not one of the reference's categories;
- out_of_range_share: share of present numbers outside the reference's [min, max];
- null_share: share of missing values, next to the reference's.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

PSI_FLOOR = 1e-4  # an empty cell would make PSI infinite; this is the usual smoothing
ROWS, NULL, OUT_OF_RANGE, UNSEEN = "n", "null", "oor", "unseen"
STATISTICS = ("psi", "unseen_share", "out_of_range_share", "null_share_change")


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    share: float = 0.1  # unseen, out-of-range and the change in null share
    min_rows: int = 100


@dataclass(frozen=True)
class FeatureProfile:
    """What the manifest's reference says about one feature, in the shape counting needs."""

    name: str
    kind: str
    null_share: float
    edges: np.ndarray | None = None  # numeric bins: (-inf, e0], (e0, e1], ..., (e_last, inf)
    expected: tuple[float, ...] | None = None  # reference share of each bin or category cell (others last)
    categories: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None

    def count(self, values: Any) -> Counter:
        """Cells of one column: rows, nulls, and bins or categories (unseen ones counted, never named)."""
        cells: Counter = Counter()
        if self.kind in ("numeric", "integer"):
            array = np.asarray([np.nan if v is None else v for v in values] if not isinstance(values, np.ndarray)
                               else values, dtype="float64")
            present = array[~np.isnan(array)]
            cells[ROWS], cells[NULL] = len(array), len(array) - len(present)
            if self.edges is not None and len(present):
                for index, count in enumerate(np.bincount(np.searchsorted(self.edges, present),
                                                          minlength=len(self.edges) + 1)):
                    if count:
                        cells[f"b{index}"] = int(count)
            if self.low is not None and len(present):
                cells[OUT_OF_RANGE] = int(((present < self.low) | (present > self.high)).sum())
        else:
            values = list(values)
            cells[ROWS] = len(values)
            if self.categories is not None:
                known = set(self.categories)
                seen = Counter(str(v) for v in values if v is not None)
                cells[NULL] = len(values) - sum(seen.values())
                for category, count in seen.items():
                    if category in known:
                        cells[f"c:{category}"] = count
                    else:
                        cells[UNSEEN] += count
            else:
                cells[NULL] = sum(1 for v in values if v is None)
        return +cells  # zero counts dropped

    def report(self, cells: Mapping[str, int], thresholds: Thresholds) -> dict[str, Any]:
        rows = int(cells.get(ROWS, 0))
        nulls = int(cells.get(NULL, 0))
        present = rows - nulls
        entry: dict[str, Any] = {"kind": self.kind, "rows": rows, "null_share": _share(nulls, rows),
                                 "reference_null_share": self.null_share, "psi": None, "unseen_share": None,
                                 "out_of_range_share": None}
        entry["null_share_change"] = None if entry["null_share"] is None else \
            round(abs(entry["null_share"] - self.null_share), 6)
        if self.expected is not None and present:
            if self.edges is not None:
                actual = [cells.get(f"b{i}", 0) for i in range(len(self.expected))]
            else:
                actual = [cells.get(f"c:{c}", 0) for c in self.categories] + [cells.get(UNSEEN, 0)]
            entry["psi"] = round(psi(self.expected, [a / present for a in actual]), 6)
        if self.categories is not None and present:
            entry["unseen_share"] = _share(cells.get(UNSEEN, 0), present)
        if self.low is not None and present:
            entry["out_of_range_share"] = _share(cells.get(OUT_OF_RANGE, 0), present)
        enough = rows >= thresholds.min_rows
        entry["drifted"] = enough and any(over(name, entry[name], thresholds, self) for name in STATISTICS)
        entry["over_threshold"] = [name for name in STATISTICS if enough and over(name, entry[name], thresholds, self)]
        return entry


def over(statistic: str, value: float | None, thresholds: Thresholds, profile: FeatureProfile) -> bool:
    if value is None:
        return False
    if statistic == "psi":
        return value > thresholds.psi
    if statistic == "unseen_share":  # rare categories outside the reference's top 100 are expected at that share
        return value - (profile.expected[-1] if profile.expected else 0.0) > thresholds.share
    return value > thresholds.share


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    """Population stability index: sum of (a - e) * ln(a / e) over cells, both floored."""
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def profiles(manifest: Mapping[str, Any]) -> dict[str, FeatureProfile]:
    """One profile per feature with reference statistics (none when the version was imported without data)."""
    reference = manifest.get("reference") or {}
    statistics = reference.get("statistics") or {}
    result = {}
    for feature in manifest["features"]:
        stats = statistics.get(feature["name"])
        if stats is None:
            continue
        result[feature["name"]] = _profile(feature["name"], feature["kind"], stats)
    return result


def _profile(name: str, kind: str, stats: Mapping[str, Any]) -> FeatureProfile:
    null_share = float(stats.get("null_share") or 0.0)
    if kind in ("numeric", "integer") and "quantiles" in stats:
        bins = stats.get("bins")
        if bins:
            edges, expected = np.asarray(bins["edges"], dtype="float64"), tuple(bins["shares"])
        else:  # imported before bins were recorded: deciles, assumed equally filled
            edges = np.unique(np.asarray(stats["quantiles"], dtype="float64"))
            expected = tuple([1 / (len(edges) + 1)] * (len(edges) + 1))
        return FeatureProfile(name, kind, null_share, edges=edges, expected=expected,
                              low=float(stats["min"]), high=float(stats["max"]))
    if kind in ("category", "boolean") and "categories" in stats:
        categories = tuple(stats["categories"])
        expected = tuple(float(v) for v in stats["categories"].values()) + (float(stats.get("other_share") or 0.0),)
        return FeatureProfile(name, kind, null_share, expected=expected, categories=categories)
    return FeatureProfile(name, kind, null_share)


def count_columns(feature_profiles: Mapping[str, FeatureProfile], columns: Mapping[str, Any]) -> dict[tuple, int]:
    """{(feature, cell): count} for one request's (or batch's) validated columns."""
    counts: dict[tuple, int] = {}
    for name, profile in feature_profiles.items():
        if name in columns:
            for cell, count in profile.count(columns[name]).items():
                counts[(name, cell)] = count
    return counts


def drift_report(feature_profiles: Mapping[str, FeatureProfile], cells: Mapping[str, Mapping[str, int]],
                 thresholds: Thresholds) -> dict[str, Any]:
    """Per-feature statistics from summed cells {feature: {cell: count}}."""
    features = {name: profile.report(cells.get(name, {}), thresholds) for name, profile in feature_profiles.items()}
    rows = max((entry["rows"] for entry in features.values()), default=0)
    return {
        "rows": rows,
        "enough_rows": rows >= thresholds.min_rows,
        "thresholds": {"psi": thresholds.psi, "share": thresholds.share, "min_rows": thresholds.min_rows},
        "drifted_features": sorted(name for name, entry in features.items() if entry["drifted"]),
        "features": features,
    }
