"""Which version of each model is active, the versions before it (for rollback), and which model is the default.

The server and the CLI keep this in the database (DatabaseActivations), so that every replica follows one truth
and the model artefacts stay immutable and read-only. A repository opened without a database (offline tools, test
fixtures) keeps it in models/<name>/state.json and models/default.json (StateFileActivations); the database adopts
those files the first time it meets a model (or a default) it has no row for.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from app.db import Database
from app.db.schema import default_model, model_activation, model_events, model_serving

log = logging.getLogger("agserve.models")
STATE_FILE = "state.json"
DEFAULT_FILE = "default.json"


class StateFileActivations:
    """models/<name>/state.json: {"active", "history", "activation"}, replaced atomically."""

    def __init__(self, root: Path):
        self.root = root

    def state(self, name: str) -> dict[str, Any]:
        return read_state_file(self.root, name)

    def activate(self, name: str, version: str) -> None:
        state = self.state(name)
        self._write(name, version, _pushed(state.get("history", []), state.get("active"), version))

    def rollback(self, name: str) -> str | None:
        history = list(self.state(name).get("history", []))
        if not history:
            return None
        restored = history.pop()
        self._write(name, restored, history)
        return restored

    def default_model(self) -> str | None:
        return read_default_file(self.root)

    def set_default_model(self, name: str) -> None:
        _write_json(self.root / DEFAULT_FILE, {"default": name})

    def _write(self, name: str, active: str, history: list[str]) -> None:
        _write_json(self.root / name / STATE_FILE, {"active": active, "history": history,
                                                    "activation": secrets.token_hex(8)})


class DatabaseActivations:
    """model_activation (one row per model) and model_events (every promote and rollback, in order)."""

    def __init__(self, database: Database, root: Path):
        self.database, self.root = database, root

    def state(self, name: str) -> dict[str, Any]:
        with self.database.reading() as db:
            row = db.execute(sa.select(model_activation).where(model_activation.c.name == name)).first()
        if row is None:
            return self._adopt_state_file(name)
        return {"active": row.active, "history": json.loads(row.history), "activation": row.activation}

    def _adopt_state_file(self, name: str) -> dict[str, Any]:
        state = read_state_file(self.root, name)
        if not state.get("active"):
            return {}
        try:
            with self.database.transaction() as db:
                self._write(db, name, state["active"], list(state.get("history", [])), "adopt", None, insert=True)
        except exc.IntegrityError:  # another worker adopted it first: read theirs
            pass
        return self.state(name)

    def activate(self, name: str, version: str) -> None:
        with self.database.transaction() as db:
            current = self._locked(db, name)
            active = current.active if current is not None else None
            history = _pushed(json.loads(current.history) if current is not None else [], active, version)
            self._write(db, name, version, history, "promote", active, insert=current is None)

    def rollback(self, name: str) -> str | None:
        self.state(name)  # adopt state.json first, so its history can be rolled back to
        with self.database.transaction() as db:
            current = self._locked(db, name)
            history = json.loads(current.history) if current is not None else []
            if not history:
                return None
            restored = history.pop()
            self._write(db, name, restored, history, "rollback", current.active, insert=False)
        return restored

    def default_model(self) -> str | None:
        with self.database.reading() as db:
            name = db.execute(sa.select(default_model.c.name).where(default_model.c.id == 1)).scalar()
        return name if name is not None else self._adopt_default_file()

    def _adopt_default_file(self) -> str | None:
        """models/default.json of a repository from before the record moved into the database, imported once."""
        name = read_default_file(self.root)
        if name is None:
            return None
        try:
            with self.database.transaction() as db:
                db.execute(default_model.insert().values(id=1, name=name, updated_at=time.time()))
        except exc.IntegrityError:  # another worker or replica adopted it first: read theirs
            pass
        else:
            log.info("adopted the default model from %s into the database", self.root / DEFAULT_FILE,
                     extra={"model": name})
        with self.database.reading() as db:
            return db.execute(sa.select(default_model.c.name).where(default_model.c.id == 1)).scalar()

    def set_default_model(self, name: str) -> None:
        with self.database.transaction() as db:
            values = {"name": name, "updated_at": time.time()}
            if db.execute(default_model.update().where(default_model.c.id == 1).values(**values)).rowcount == 0:
                db.execute(default_model.insert().values(id=1, **values))

    def events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest promotes and rollbacks first."""
        with self.database.transaction() as db:
            rows = db.execute(sa.select(model_events).where(model_events.c.name == name)
                              .order_by(model_events.c.seq.desc()).limit(limit)).all()
        return [{"seq": r.seq, "at": _iso(r.at), "action": r.action, "version": r.version, "previous": r.previous}
                for r in rows]

    @staticmethod
    def _locked(db: sa.Connection, name: str):
        # FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers.
        return db.execute(sa.select(model_activation).where(model_activation.c.name == name).with_for_update()).first()

    @staticmethod
    def _write(db: sa.Connection, name: str, active: str, history: list[str], action: str, previous: str | None,
               insert: bool) -> None:
        now = time.time()
        values = {"active": active, "history": json.dumps(history), "activation": secrets.token_hex(8),
                  "updated_at": now}
        if insert:
            db.execute(model_activation.insert().values(name=name, **values))
        else:
            db.execute(model_activation.update().where(model_activation.c.name == name).values(**values))
        db.execute(model_events.insert().values(at=now, name=name, action=action, version=active, previous=previous))


class ServingReport:
    """Each worker writes what it serves (version, status, last failure) after every refresh; readers see the fleet."""

    def __init__(self, database: Database, replica: str, stale_after: float):
        self.database, self.replica, self.stale_after = database, replica, stale_after

    def report(self, slots: dict[str, Any]) -> None:
        now, worker = time.time(), os.getpid()
        with self.database.transaction() as db:
            for name, slot in slots.items():
                key = (model_serving.c.replica == self.replica) & (model_serving.c.worker == worker) & \
                      (model_serving.c.name == name)
                values = {"version": slot.version, "status": slot.status, "error": slot.error,
                          "failed_version": slot.failed_version, "reported_at": now}
                if db.execute(model_serving.update().where(key).values(**values)).rowcount == 0:
                    db.execute(model_serving.insert().values(replica=self.replica, worker=worker, name=name, **values))
            # Workers that stopped reporting (recycled, killed, scaled down) leave the picture.
            db.execute(model_serving.delete().where(model_serving.c.reported_at < now - 10 * self.stale_after))

    def fleet(self, name: str) -> list[dict[str, Any]]:
        """Every worker of every replica that reported on name recently."""
        since = time.time() - self.stale_after
        with self.database.reading() as db:
            rows = db.execute(sa.select(model_serving).where(model_serving.c.name == name,
                                                             model_serving.c.reported_at >= since)
                              .order_by(model_serving.c.replica, model_serving.c.worker)).all()
        return [{"replica": r.replica, "worker": r.worker, "version": r.version, "status": r.status, "error": r.error,
                 "failed_version": r.failed_version, "reported_at": _iso(r.reported_at)} for r in rows]


def read_state_file(root: Path, name: str) -> dict[str, Any]:
    path = root / name / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_default_file(root: Path) -> str | None:
    path = root / DEFAULT_FILE
    return json.loads(path.read_text()).get("default") if path.is_file() else None


def _write_json(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)  # readers see the old or the new content, never half of it


def _pushed(history: list[str], previous: str | None, version: str) -> list[str]:
    """The rollback history after activating version: the previous active version goes on top."""
    history = list(history)
    if previous and previous != version:
        history.append(previous)
    return history


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
