"""Drift statistics from summed per-worker counts, against reference statistics computed like the manifest's."""
from __future__ import annotations

import numpy as np
import pytest

from app.inference.manifest import _feature_stats
from app.inference.served import Prediction
from app.monitoring.collector import Collector
from app.db import sqlite_file
from app.monitoring.drift import Thresholds, count_columns, drift_report, profiles, psi
from app.monitoring.store import BUCKET_SECONDS, MonitorStore
from tests.support.data import FEATURES, mixed_frame

KINDS = {"num": "numeric", "cnt": "integer", "color": "category", "flag": "boolean", "when": "datetime",
         "note": "text"}


@pytest.fixture(scope="module")
def manifest():
    reference = mixed_frame(n=3000, seed=100)
    return {"name": "m", "version": "1", "features": [{"name": n, "kind": KINDS[n]} for n in FEATURES],
            "reference": {"statistics": {n: _feature_stats(reference[n], KINDS[n]) for n in FEATURES}}}


def columns(frame):
    """Columns as validated requests hand them over: numbers as float arrays, the rest as lists."""
    out = {}
    for name in FEATURES:
        if KINDS[name] in ("numeric", "integer"):
            out[name] = frame[name].to_numpy(dtype="float64")
        else:
            out[name] = [None if v is None or v != v else (v.isoformat() if hasattr(v, "isoformat") else v)
                         for v in frame[name].tolist()]
    return out


def report_of(manifest, frame, thresholds=Thresholds()):
    counts = count_columns(profiles(manifest), columns(frame))
    cells = {}
    for (feature, cell), count in counts.items():
        cells.setdefault(feature, {})[cell] = count
    return drift_report(profiles(manifest), cells, thresholds)


def shifted(frame):
    frame = frame.copy()
    frame["num"] = frame["num"] + 6  # six standard deviations
    frame.loc[frame.index[::3], "color"] = "purple"  # a third of the rows: a colour never seen
    return frame


def test_rows_from_the_reference_distribution_stay_under_every_threshold(manifest):
    for seed in (1, 2, 3):
        report = report_of(manifest, mixed_frame(n=500, seed=seed))
        assert report["enough_rows"] and report["drifted_features"] == [], report
        assert report["features"]["num"]["psi"] < 0.1 and report["features"]["color"]["psi"] < 0.1


def test_shifted_rows_raise_the_shifted_features_and_only_those(manifest):
    report = report_of(manifest, shifted(mixed_frame(n=500, seed=4)))
    features = report["features"]
    assert report["drifted_features"] == ["color", "num"]
    assert features["num"]["psi"] > 0.2 and features["num"]["out_of_range_share"] > 0.5
    assert set(features["num"]["over_threshold"]) == {"psi", "out_of_range_share"}
    assert features["color"]["unseen_share"] > 0.3 and features["color"]["psi"] > 0.2
    for name in ("cnt", "flag", "when", "note"):
        assert not features[name]["drifted"], (name, features[name])


def test_missing_values_beyond_the_reference_share_are_flagged(manifest):
    frame = mixed_frame(n=500, seed=5)
    frame.loc[frame.index[:250], "cnt"] = np.nan
    entry = report_of(manifest, frame)["features"]["cnt"]
    assert entry["null_share"] == 0.5 and entry["reference_null_share"] == 0.0
    assert entry["over_threshold"] == ["null_share_change"]


def test_too_few_rows_are_never_flagged(manifest):
    report = report_of(manifest, shifted(mixed_frame(n=50, seed=6)))
    assert not report["enough_rows"] and report["drifted_features"] == []
    assert report["features"]["num"]["psi"] > 0.2  # measured, just not judged


def test_psi_is_zero_for_equal_shares_and_grows_with_the_difference():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])


class Served:
    """What the collector needs of a served model: its name, version and manifest."""

    def __init__(self, manifest):
        self.name, self.version, self.manifest = manifest["name"], manifest["version"], manifest


def result_of(frame):
    return Prediction([0.0] * len(frame), None, inputs=columns(frame))


def test_workers_counts_add_up_over_a_sliding_window(manifest, tmp_path):
    """Two collectors (two workers) writing to one store: the window holds both; old buckets leave it."""
    now = [1_000_000.0]
    store = MonitorStore(sqlite_file(tmp_path / "monitor.sqlite3"))
    workers = [Collector(store, clock=lambda: now[0]) for _ in range(2)]
    model = Served(manifest)
    old = mixed_frame(n=300, seed=7)
    for index, worker in enumerate(workers):
        worker.observe_prediction(f"old-{index}", model, result_of(old))
        worker.flush()
    cells = store.drift_cells("m", "1", now[0] - 60)
    assert cells["num"]["n"] == 600 and cells["color"]["n"] == 600

    now[0] += 120  # two minutes later: shifted rows arrive, and a 60-second window no longer holds the old ones
    for index, worker in enumerate(workers):
        worker.observe_prediction(f"new-{index}", model, result_of(shifted(mixed_frame(n=300, seed=8 + index))))
        worker.flush()
    recent = store.drift_cells("m", "1", now[0] - 60)
    assert recent["num"]["n"] == 600
    recent_report = drift_report(profiles(manifest), recent, Thresholds())
    assert recent_report["drifted_features"] == ["color", "num"]
    both = drift_report(profiles(manifest), store.drift_cells("m", "1", now[0] - 180), Thresholds())
    assert both["rows"] == 1200
    store.prune(now[0] - 60 - BUCKET_SECONDS, now[0] - 3600, now[0] - 3600)
    assert store.drift_cells("m", "1", now[0] - 180)["num"]["n"] == 600
