"""Loading a version safely: checksums and versions are verified before anything is unpickled."""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Mapping

from app.config import math_threads
from app.inference.boosters import boosters_reading_blocks
from app.inference.ensembles import array_plan
from app.inference.errors import ModelLoadError
from app.inference.explain import load_background
from app.inference.features import RowSpec
from app.inference.forests import forests_in_turn
from app.inference.generators import pipeline_in_columns
from app.inference.wrappers import wrappers_by_position
from app.inference.manifest import file_checksums, installed_versions, saved_versions
from app.inference.repository import ModelVersion, version_mismatch
from app.inference.served import ServedModel
from app.threads import cap_estimator_jobs
from app.values import NAME_MAX

log = logging.getLogger("agserve.models")


def verify(version: ModelVersion, manifest: dict[str, Any]) -> None:
    """Raise ModelLoadError if any predictor file changed, vanished or appeared, or versions differ."""
    expected = manifest["files"]
    actual = file_checksums(version.predictor_path)
    changed = sorted(p for p in expected if p in actual and actual[p] != expected[p])
    missing = sorted(p for p in expected if p not in actual)
    unexpected = sorted(p for p in actual if p not in expected)
    if changed or missing or unexpected:
        parts = [f"{label}: {', '.join(paths)}" for label, paths in
                 (("changed", changed), ("missing", missing), ("unexpected", unexpected)) if paths]
        raise ModelLoadError(f"model {version.name} version {version.version} failed its integrity check "
                             f"({'; '.join(parts)}); refusing to load it")
    mismatch = version_mismatch(saved_versions(version.predictor_path), installed_versions())
    if mismatch:
        raise ModelLoadError(f"model {version.name} version {version.version} was {mismatch}; refusing to load it")


def load(version: ModelVersion, settings: Mapping[str, Any]) -> tuple[ServedModel, dict[str, Any]]:
    """Verify, unpickle, persist in memory and warm up one version; return it with load facts."""
    started = time.perf_counter()
    manifest = version.manifest()
    verify(version, manifest)
    try:  # the owner's bounds (schema.json) are checked against the features here, before anything is unpickled
        bounds = json.loads(version.bounds_path.read_text()) if version.bounds_path.is_file() else None
        spec = RowSpec.from_manifest(manifest, bounds, unknown=settings["UNKNOWN_FIELDS"],
                                     missing=settings["MISSING_FEATURES"],
                                     length_caps={"category": settings["MAX_CATEGORY_LENGTH"],
                                                  "text": settings["MAX_TEXT_LENGTH"]})
    except ValueError as exc:
        raise ModelLoadError(f"model {version.name} version {version.version}: {exc}") from None

    from autogluon.tabular import TabularPredictor  # heavy: imported in the worker, after the fork

    predictor = TabularPredictor.load(str(version.predictor_path), verbosity=0,
                                      require_version_match=True, require_py_version_match=True)
    persisted = predictor.persist(models="best", with_ancestors=True, max_memory=settings["PERSIST_MAX_MEMORY"])
    if not persisted:
        log.warning("model weights not persisted in memory (too large for PERSIST_MAX_MEMORY); "
                    "they will be read from disk on every call",
                    extra={"model": version.name, "version": version.version})
    capped = cap_estimator_jobs(predictor, math_threads(settings))
    in_turn = forests_in_turn(predictor)
    in_columns = pipeline_in_columns(predictor._learner.feature_generator)
    reading_blocks = boosters_reading_blocks(predictor)
    by_position = wrappers_by_position(predictor)
    model = ServedModel(version.name, version.version, manifest, predictor, spec)
    model.plan = array_plan(predictor)
    model.background = load_background(version.path, manifest, model)
    warmup_ms = model.warm_up()
    if settings["BATCHING"]:
        model.start_batching(settings["BATCH_MAX_ROWS"], settings["BATCH_MAX_WAIT_MS"] / 1000,
                             settings["EXPLAIN_SHARE"])
    model.explain_chunk_rows = settings["EXPLAIN_CHUNK_ROWS"]
    model.cache_max_rows = settings["CACHE_MAX_REQUEST_ROWS"]
    model.max_columns = max(settings["MAX_COLUMNS"], len(model.features))
    # 4 UTF-8 bytes a character, 2 quotes: no acceptable cell (value or column name) is longer
    model.max_cell_bytes = 4 * max(settings["MAX_TEXT_LENGTH"], settings["MAX_CATEGORY_LENGTH"], NAME_MAX) + 2
    facts = {"load_seconds": round(time.perf_counter() - started, 3), "warmup_ms": round(warmup_ms, 2),
             "persisted": list(persisted), "jobs_capped": capped, "forests_without_joblib": in_turn,
             "features_in_columns": in_columns, "boosters_reading_blocks": reading_blocks,
             "wrappers_by_position": by_position, "array_plan": model.plan.taken if model.plan else []}
    return model, facts
