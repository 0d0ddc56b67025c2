"""The models this worker serves: loaded after the fork, looked up by name on every request, and kept in step
with the repository by a watcher thread that loads a newly activated version beside the old one and swaps it in.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.db import DatabaseUnavailable
from app.inference import loading
from app.inference.errors import ModelError, ModelNotFound, ModelNotReady
from app.inference.repository import ModelRepository
from app.inference.served import ServedModel

log = logging.getLogger("agserve.models")


@dataclass
class Slot:
    """What a worker knows of one served model: the version serving, and the last failure to load one."""

    name: str
    version: str | None = None
    status: str = "pending"  # pending → ready | failed (failed only while nothing serves)
    error: str | None = None
    model: ServedModel | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    failed_version: str | None = None  # a version that could not load; retried only once another is activated

    def describe(self) -> dict[str, Any]:
        batcher = self.model.batcher if self.model is not None else None
        batching = {"batches": batcher.batches, "requests": batcher.requests} if batcher else None
        return {"version": self.version, "status": self.status, "error": self.error,
                "failed_version": self.failed_version, "batching": batching, **self.facts}


def settle_memory() -> None:
    """Collect once, then exempt everything alive (the models) from future collections: the cyclic GC would
    otherwise walk the models' large object graphs again and again while answering requests (20% of a big batch)."""
    gc.unfreeze()  # objects of a replaced version become collectable again
    gc.collect()
    gc.freeze()


class ModelRegistry:
    def __init__(self, repository: ModelRepository, names: tuple[str, ...] = (), default: str = "", report=None):
        self.repository = repository
        self.report = report  # a ServingReport: tells the fleet what this worker serves after every refresh
        self._configured_names = tuple(names)
        self._configured_default = default
        self._recorded_default = ""
        self.slots: dict[str, Slot] = {}
        self._lock = threading.Lock()  # one refresh at a time (start-up load or watcher)
        self._discover()

    @property
    def default_name(self) -> str:
        """AGSERVE_DEFAULT_MODEL, else the one model AGSERVE_MODELS names, else the repository's recorded default:
        never a model picked by its name or by what else is served, so adding a model never moves `/predict`."""
        if self._configured_default:
            return self._configured_default
        if len(self._configured_names) == 1:
            return self._configured_names[0]
        return self._recorded_default

    def _discover(self) -> None:
        try:
            self._recorded_default = self.repository.default_model() or ""
        except (OSError, ValueError, DatabaseUnavailable) as exc:  # keep the default known so far
            log.error("cannot read the default model: %s", exc)
        names = self._configured_names or tuple(n for n in self.repository.names() if self.repository.active_version(n))
        for name in names:
            self.slots.setdefault(name, Slot(name))

    def refresh(self, settings: Mapping[str, Any]) -> None:
        """Bring every slot to its model's active version (at start-up: load every served model); the version
        serving keeps serving until then, and a failure is recorded on the slot, never raised."""
        with self._lock:
            self._discover()
            loaded = False
            for slot in list(self.slots.values()):
                try:
                    active = self.repository.active_version(slot.name)
                except (OSError, ValueError, DatabaseUnavailable) as exc:
                    log.error("cannot read the active version: %s", exc, extra={"model": slot.name})
                    continue
                if active is None and slot.model is None:
                    slot.status, slot.error = "failed", ("no active version in the repository (a version serves once "
                                                         "it passes `agserve models validate` and is promoted)")
                if active is None or active in (slot.version, slot.failed_version):
                    continue
                loaded = self._load(slot, active, settings) or loaded
            if loaded:
                settle_memory()
            if self.report is not None:
                try:
                    self.report.report(self.slots)
                except DatabaseUnavailable as exc:
                    log.warning("cannot report what this worker serves: %s", exc)

    def _load(self, slot: Slot, version: str, settings: Mapping[str, Any]) -> bool:
        try:
            model, facts = loading.load(self.repository.get(slot.name, version), settings)
        except Exception as exc:  # a bad version must never take down the one serving
            message = exc.message if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            slot.failed_version = version
            if slot.model is None:
                slot.status, slot.error = "failed", message
            else:
                slot.error = f"version {version} failed to load, still serving {slot.version}: {message}"
            log.error("model failed to load: %s", message, extra={"model": slot.name, "version": version},
                      exc_info=not isinstance(exc, ModelError))
            return False
        # A promote or rollback is a new activation: cached answers of an earlier one are never served.
        model.cache_namespace = f"{slot.name}:{version}:{self.repository.activation(slot.name)}"
        previous, replaced = slot.version, slot.model
        slot.model, slot.version, slot.facts = model, version, facts  # one reference swap: requests see old or new
        slot.status, slot.error, slot.failed_version = "ready", None, None
        if replaced is not None:
            replaced.close()
        log.info("model ready", extra={"model": slot.name, "version": version, "replaced": previous, **facts})
        return True

    def watch(self, settings: Mapping[str, Any], interval: float) -> threading.Thread:
        """Refresh every interval seconds in a daemon thread of this worker."""
        def loop() -> None:
            while True:  # a daemon thread: it ends with the worker
                time.sleep(interval)
                try:
                    self.refresh(settings)
                except DatabaseUnavailable as exc:  # the version serving keeps serving; try again next time
                    log.warning("cannot check for a new version: %s", exc)
                except Exception:  # keep watching whatever happens
                    log.exception("model refresh failed")

        thread = threading.Thread(target=loop, name="agserve-model-watcher", daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return bool(self.slots) and all(s.model is not None for s in self.slots.values())

    def not_ready_reason(self) -> str:
        if not self.slots:
            return f"no model with an active version in the repository at {self.repository.root}"
        return "; ".join(f"{s.name}: {s.error or s.status}" for s in self.slots.values() if s.model is None)

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model called name (the default when None), at version if one is given; 404 if not served
        (or not at that version), 503 if not ready."""
        if name is None and not self.default_name:
            raise ModelNotFound("no default model: choose one with `agserve models default NAME` or "
                                "AGSERVE_DEFAULT_MODEL, or call /models/<name>/predict")
        what = f"model {name!r}" if name else f"the default model {self.default_name!r}"
        name = name or self.default_name
        slot = self.slots.get(name)
        if slot is None:
            # No list of the served models: GET /models shows them to callers with the model_info scope.
            raise ModelNotFound(f"{what} is not served here")
        model = slot.model
        if model is None:
            raise ModelNotReady(f"model {name!r} is not ready", {"status": slot.status, "reason": slot.error})
        if version is not None and version != model.version:
            raise ModelNotFound(f"model {name!r} version {version!r} is not served")
        return model

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: slot.describe() for name, slot in sorted(self.slots.items())}
