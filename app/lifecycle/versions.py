"""Which version serves: promote only what passed the gate (or with force), roll back in one step."""
from __future__ import annotations

from typing import Any

from app.inference import loading
from app.inference.errors import ModelError
from app.inference.repository import ModelRepository
from app.lifecycle.validation import manifest_digest, read_report


class PromotionRefused(ModelError):
    status = 409


def check_promotable(repository: ModelRepository, name: str, version: str) -> None:
    """Raise PromotionRefused unless version passed validation and has not changed since."""
    candidate = repository.get(name, version)
    report = read_report(candidate)
    if report is None:
        raise PromotionRefused(f"{name} version {version} has not been validated "
                               f"(agserve models validate {name} {version} --data HOLDOUT.csv)")
    if not report["passed"]:
        failed = [c["name"] for c in report["checks"] if not c["passed"]]
        raise PromotionRefused(f"{name} version {version} failed validation ({', '.join(failed)})")
    if report["manifest_sha256"] != manifest_digest(candidate):
        raise PromotionRefused(f"{name} version {version} changed after it was validated; validate it again")
    try:
        loading.verify(candidate, candidate.manifest())
    except ModelError as exc:
        raise PromotionRefused(exc.message) from None


def promote(repository: ModelRepository, name: str, version: str, force: bool = False) -> dict[str, Any]:
    """Make version active; without force it must have passed validation. Returns what changed."""
    previous = repository.active_version(name)
    repository.get(name, version)
    if not force:
        check_promotable(repository, name, version)
    repository.activate(name, version)
    return {"name": name, "active": version, "previous": previous, "forced": force}


def rollback(repository: ModelRepository, name: str) -> dict[str, Any]:
    """Return to the version that was active before the current one."""
    previous = repository.active_version(name)
    restored = repository.rollback(name)
    if restored is None:
        raise PromotionRefused(f"{name} has no earlier version to roll back to")
    return {"name": name, "active": restored, "previous": previous}


def describe_versions(repository: ModelRepository, name: str) -> dict[str, Any]:
    repository.require(name)
    active = repository.active_version(name)
    versions = []
    for version in repository.versions(name):
        entry = repository.get(name, version)
        manifest, report = entry.manifest(), read_report(entry)
        versions.append({
            "version": version, "active": version == active, "imported_at": manifest["imported_at"],
            "problem_type": manifest["problem_type"], "model_best": manifest["model_best"],
            "validation": None if report is None else {
                "passed": report["passed"], "at": report["at"],
                "current": report["manifest_sha256"] == manifest_digest(entry)},
        })
    return {"name": name, "active": active, "history": repository.history(name), "versions": versions}
