"""The manifest written beside each imported predictor: checksums, versions, schema and reference facts."""
from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.frames import json_value

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def installed_versions() -> dict[str, str]:
    """The AutoGluon and Python versions of this process, as AutoGluon compares them on load."""
    return {
        "autogluon": package_version("autogluon.tabular"),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def saved_versions(predictor_dir: Path) -> dict[str, str]:
    """The versions a predictor directory was saved with, read from AutoGluon's own files."""
    autogluon = (predictor_dir / "version.txt").read_text().strip()
    metadata = json.loads((predictor_dir / "metadata.json").read_text())
    return {"autogluon": autogluon, "python": str(metadata.get("py_version", ""))}


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by its POSIX path relative to root."""
    checksums = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        checksums[path.relative_to(root).as_posix()] = digest.hexdigest()
    return checksums


def feature_kind(raw_type: str, special_types: list[str]) -> str:
    """Map AutoGluon's raw/special feature types to the kinds the input schema knows."""
    if "text" in special_types:
        return "text"
    if raw_type == "datetime" or "datetime_as_object" in special_types:
        return "datetime"
    if raw_type == "bool":
        return "boolean"
    if raw_type == "int":
        return "integer"
    if raw_type == "float":
        return "numeric"
    return "category"


def describe_features(predictor) -> list[dict[str, Any]]:
    metadata = predictor.feature_metadata_in
    special = metadata.get_type_map_special()
    return [
        {
            "name": name,
            "kind": feature_kind(metadata.type_map_raw[name], special.get(name, [])),
            "raw_type": metadata.type_map_raw[name],
            "special_types": list(special.get(name, [])),
        }
        for name in predictor.original_features
    ]


def build_manifest(predictor, predictor_dir: Path, *, name: str, version: str,
                   reference: pd.DataFrame | None = None) -> dict[str, Any]:
    """Everything the server needs to know about a version without unpickling it."""
    problem_type = predictor.problem_type
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "name": name,
        "version": version,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": saved_versions(predictor_dir),
        "files": file_checksums(predictor_dir),
        "problem_type": problem_type,
        "label": predictor.label,
        "class_labels": json_value(list(predictor.class_labels)) if predictor.class_labels is not None else None,
        "positive_class": json_value(predictor.positive_class) if problem_type == "binary" else None,
        "quantile_levels": list(predictor.quantile_levels) if problem_type == "quantile" else None,
        "eval_metric": predictor.eval_metric.name,
        "model_best": predictor.model_best,
        "features": describe_features(predictor),
        "reference": None,
    }
    if reference is not None and len(reference):
        manifest["reference"] = describe_reference(predictor, reference, manifest["features"])
    return manifest


def describe_reference(predictor, data: pd.DataFrame, features: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-feature statistics, a sample row, scores and feature importance computed on data."""
    names = [f["name"] for f in features]
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise ValueError(f"reference data lacks the features {', '.join(missing)}")
    stats = {f["name"]: _feature_stats(data[f["name"]], f["kind"]) for f in features}
    reference: dict[str, Any] = {
        "rows": int(len(data)),
        "statistics": stats,
        "sample_row": _sample_row(data[names]),
        "scores": None,
        "feature_importance": None,
    }
    labelled = data[data[predictor.label].notna()] if predictor.label in data.columns else None
    if labelled is not None and len(labelled):
        scores = predictor.evaluate(labelled, silent=True)
        reference["scores"] = {k: json_value(v) for k, v in scores.items()}
        # Permutation importance is costly and needs labels: computed once here, never per request.
        importance = predictor.feature_importance(
            labelled, subsample_size=min(len(labelled), 1000), num_shuffle_sets=3, silent=True)
        reference["feature_importance"] = {
            str(feature): {k: json_value(row[k]) for k in ("importance", "stddev", "p_value") if k in row}
            for feature, row in importance.iterrows()
        }
    return reference


def _feature_stats(column: pd.Series, kind: str) -> dict[str, Any]:
    stats: dict[str, Any] = {"null_share": json_value(float(column.isna().mean()))}
    present = column.dropna()
    if kind in ("numeric", "integer") and len(present):
        values = pd.to_numeric(present, errors="coerce").dropna().astype(float)
        stats.update({
            "mean": json_value(values.mean()), "std": json_value(values.std()),
            "min": json_value(values.min()), "max": json_value(values.max()),
            "quantiles": [json_value(q) for q in np.quantile(values, np.linspace(0.1, 0.9, 9))],
        })
        # Drift compares live inputs with these bins (deciles; ties merged) and their reference shares.
        edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
        shares = np.bincount(np.searchsorted(edges, values.to_numpy()), minlength=len(edges) + 1) / len(values)
        stats["bins"] = {"edges": [json_value(e) for e in edges], "shares": [json_value(s) for s in shares]}
    elif kind in ("category", "boolean"):
        shares = present.astype(str).value_counts(normalize=True)
        stats["categories"] = {str(k): json_value(v) for k, v in shares.head(100).items()}
        stats["other_share"] = json_value(float(shares.iloc[100:].sum()))
    elif kind == "datetime" and len(present):
        moments = pd.to_datetime(present, errors="coerce").dropna()
        if len(moments):
            stats.update({"min": moments.min().isoformat(), "max": moments.max().isoformat()})
    elif kind == "text":
        stats["mean_length"] = json_value(present.astype(str).str.len().mean()) if len(present) else None
    return stats


def _sample_row(frame: pd.DataFrame) -> dict[str, Any]:
    """The most complete row (fewest missing values), used for warm-up and as an example request."""
    row = frame.iloc[int(frame.isna().sum(axis=1).to_numpy().argmin())]
    return {str(k): json_value(v) for k, v in row.items()}


def write_manifest(version_dir: Path, manifest: dict[str, Any]) -> None:
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / MANIFEST_FILE).read_text())
