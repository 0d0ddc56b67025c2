"""The models this worker serves: loaded once after the fork, looked up by name on every request."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.inference import loading
from app.inference.errors import ModelError, ModelNotFound, ModelNotReady
from app.inference.repository import ModelRepository
from app.inference.served import ServedModel

log = logging.getLogger("agserve.models")


@dataclass
class Slot:
    """What a worker knows of one served model: its state, and the model once it is ready."""

    name: str
    version: str | None = None
    status: str = "pending"  # pending → ready | failed
    error: str | None = None
    model: ServedModel | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status, "error": self.error, **self.facts}


class ModelRegistry:
    def __init__(self, repository: ModelRepository, names: tuple[str, ...] = (), default: str = ""):
        self.repository = repository
        self.names = tuple(names) or tuple(n for n in repository.names() if repository.active_version(n))
        self.default_name = default or (self.names[0] if self.names else "")
        self.slots = {name: Slot(name) for name in self.names}

    def load_all(self, settings: Mapping[str, Any]) -> None:
        """Load every served model; a failure is recorded on its slot, never raised."""
        for slot in self.slots.values():
            try:
                version = self.repository.get(slot.name)
                slot.version = version.version
                slot.model, slot.facts = loading.load(version, settings)
                slot.status, slot.error = "ready", None
                log.info("model ready", extra={"model": slot.name, "version": slot.version, **slot.facts})
            except ModelError as exc:
                slot.status, slot.error = "failed", exc.message
                log.error("model failed to load: %s", exc.message, extra={"model": slot.name})
            except Exception as exc:  # AutoGluon's own failures: keep the worker up, report the reason
                slot.status, slot.error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("model failed to load", extra={"model": slot.name})

    @property
    def ready(self) -> bool:
        return bool(self.slots) and all(s.status == "ready" for s in self.slots.values())

    def not_ready_reason(self) -> str:
        if not self.slots:
            return f"no model with an active version in the repository at {self.repository.root}"
        return "; ".join(f"{s.name}: {s.error or s.status}" for s in self.slots.values() if s.status != "ready")

    def get(self, name: str | None = None) -> ServedModel:
        """The served model called name (the default when None); 404 if not served, 503 if not ready."""
        name = name or self.default_name
        slot = self.slots.get(name)
        if slot is None:
            raise ModelNotFound(f"model {name!r} is not served here" if name else "no model is served",
                                {"served": list(self.slots)})
        if slot.model is None:
            raise ModelNotReady(f"model {name!r} is not ready", {"status": slot.status, "reason": slot.error})
        return slot.model

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: slot.describe() for name, slot in self.slots.items()}
