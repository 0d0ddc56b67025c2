"""The monitoring store: tables in the database (app.db), shared by every worker of every replica.

Workers add counts into time buckets (traffic, drift cells) and record each answered request's outputs (for
feedback); readers sum the buckets of a sliding window. Counts are added by upserts (count = count + new), so the sum
over workers and replicas is exact whatever order their flushes arrive in. Alert state lives here too, so whichever
process evaluates next knows what was announced.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.db import Database
from app.db.schema import (monitor_alert_log, monitor_alert_state, monitor_drift, monitor_evaluator,
                           monitor_outcomes, monitor_predictions, monitor_traffic)

BUCKET_SECONDS = 10  # granularity of every sliding window
ALERT_LOG_KEPT = 10_000  # newest alert events kept; older ones are pruned


def bucket_of(at: float) -> int:
    return int(at // BUCKET_SECONDS)


class MonitorStore:
    def __init__(self, database: Database, replica: str = ""):
        self.database = database
        self.replica = replica or socket.gethostname()  # names the evaluator in the alert log

    # --- writing (one transaction per flush) -------------------------------------------------------------------
    def add(self, traffic: Iterable[tuple], drift: Iterable[tuple], predictions: Iterable[tuple]) -> None:
        """traffic (bucket, model, status_class, latency_bin, count); drift (model, version, bucket, feature, cell,
        count); predictions (request_id, at, model, version, rows, outputs)."""
        # Sorted: every writer takes the rows' locks in one order, so concurrent flushes never deadlock.
        traffic, drift, predictions = sorted(traffic), sorted(drift), sorted(predictions)
        with self.database.transaction() as db:
            for table, rows, statement in ((monitor_traffic, traffic, self._adding(monitor_traffic)),
                                           (monitor_drift, drift, self._adding(monitor_drift)),
                                           (monitor_predictions, predictions, self._replacing(monitor_predictions))):
                if rows:
                    names = [column.name for column in table.columns]
                    db.execute(statement, [dict(zip(names, row)) for row in rows])

    def _insert(self, table: sa.Table):
        return (postgresql.insert if self.database.dialect == "postgresql" else sqlite.insert)(table)

    def _adding(self, table: sa.Table):
        """INSERT, or add the count to the row already there."""
        statement = self._insert(table)
        return statement.on_conflict_do_update(index_elements=list(table.primary_key.columns),
                                               set_={"count": table.c["count"] + statement.excluded["count"]})

    def _replacing(self, table: sa.Table):
        """INSERT, or replace the row already there (a retried request id, a corrected outcome)."""
        statement = self._insert(table)
        keys = {column.name for column in table.primary_key.columns}
        return statement.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={column.name: statement.excluded[column.name] for column in table.columns if column.name not in keys})

    # --- sliding windows ---------------------------------------------------------------------------------------
    def traffic(self, since: float, model: str | None = None) -> list[tuple[str, int, int]]:
        """(status_class, latency_bin, count) summed since a time, for one model or all requests."""
        t = monitor_traffic
        query = sa.select(t.c.status_class, t.c.latency_bin, sa.func.sum(t.c["count"])) \
            .where(t.c.bucket >= bucket_of(since)).group_by(t.c.status_class, t.c.latency_bin)
        if model is not None:
            query = query.where(t.c.model == model)
        with self.database.reading() as db:
            return [(status, int(latency_bin), int(count)) for status, latency_bin, count in db.execute(query)]

    def drift_cells(self, model: str, version: str, since: float) -> dict[str, dict[str, int]]:
        d = monitor_drift
        query = sa.select(d.c.feature, d.c.cell, sa.func.sum(d.c["count"])) \
            .where(d.c.model == model, d.c.version == version, d.c.bucket >= bucket_of(since)) \
            .group_by(d.c.feature, d.c.cell)
        cells: dict[str, dict[str, int]] = {}
        with self.database.reading() as db:
            for feature, cell, count in db.execute(query):
                cells.setdefault(feature, {})[cell] = int(count)
        return cells

    # --- predictions and outcomes ------------------------------------------------------------------------------
    def predictions(self, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The recorded answers among request_ids (whichever worker or replica answered them)."""
        p = monitor_predictions
        with self.database.reading() as db:
            rows = db.execute(sa.select(p).where(p.c.request_id.in_(list(request_ids)))).all()
        return {row.request_id: {"request_id": row.request_id, "at": row.at, "model": row.model,
                                 "version": row.version, "rows": row.rows, "outputs": orjson.loads(row.outputs)}
                for row in rows}

    def add_outcomes(self, outcomes: Iterable[tuple]) -> None:
        """(prediction_id, request_id, row, model, version, at, actual); a repeated id replaces the earlier one."""
        names = [column.name for column in monitor_outcomes.columns]
        rows = [dict(zip(names, (*o[:6], orjson.dumps(o[6])))) for o in sorted(outcomes, key=lambda o: o[0])]
        if rows:
            with self.database.transaction() as db:
                db.execute(self._replacing(monitor_outcomes), rows)

    def joined(self, model: str, version: str, since: float, limit: int) -> list[tuple[Any, dict[str, Any], int]]:
        """The newest outcomes of a version since a time, each with its request's outputs and its row."""
        o, p = monitor_outcomes, monitor_predictions
        query = sa.select(o.c.actual, o.c.row, p.c.request_id, p.c.outputs) \
            .join(p, p.c.request_id == o.c.request_id) \
            .where(o.c.model == model, o.c.version == version, o.c.at >= since) \
            .order_by(o.c.at.desc()).limit(limit)
        with self.database.reading() as db:
            rows = db.execute(query).all()
        outputs: dict[str, dict[str, Any]] = {}
        joined = []
        for actual, row, request_id, blob in rows:
            if request_id not in outputs:
                outputs[request_id] = orjson.loads(blob)
            joined.append((orjson.loads(actual), outputs[request_id], row))
        return joined

    def prune(self, keep_buckets_since: float, keep_predictions_since: float, keep_resolved_since: float) -> None:
        """Drop what no window, feedback or cool-down can still need (run by the evaluating process only)."""
        bucket = bucket_of(keep_buckets_since)
        with self.database.transaction() as db:
            db.execute(monitor_traffic.delete().where(monitor_traffic.c.bucket < bucket))
            db.execute(monitor_drift.delete().where(monitor_drift.c.bucket < bucket))
            db.execute(monitor_outcomes.delete().where(monitor_outcomes.c.at < keep_predictions_since))
            db.execute(monitor_predictions.delete().where(monitor_predictions.c.at < keep_predictions_since))
            state = monitor_alert_state
            db.execute(state.delete().where(state.c.firing.is_(False), sa.or_(
                state.c.last_sent.is_(None), state.c.last_sent < keep_resolved_since)))
            newest = db.execute(sa.select(sa.func.max(monitor_alert_log.c.seq))).scalar()
            if newest is not None:
                db.execute(monitor_alert_log.delete().where(monitor_alert_log.c.seq <= newest - ALERT_LOG_KEPT))

    # --- alerts ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def alert_condition(self, rule: str, subject: str) -> Iterator["AlertCondition"]:
        """One (rule, subject) condition, locked until the block ends: evaluators that ever overlap (a lock lost and
        taken over) each see the other's announcement, so none is sent twice."""
        state = monitor_alert_state
        with self.database.transaction() as db:
            db.execute(self._insert(state).values(rule=rule, subject=subject, firing=False).on_conflict_do_nothing())
            row = db.execute(sa.select(state).where(state.c.rule == rule, state.c.subject == subject)
                             .with_for_update()).one()
            yield AlertCondition(self, db, rule, subject, bool(row.firing), row.since, row.last_sent)

    def firing_subjects(self, rule: str) -> list[str]:
        state = monitor_alert_state
        with self.database.reading() as db:
            return list(db.execute(sa.select(state.c.subject).where(state.c.rule == rule, state.c.firing.is_(True))
                                   .order_by(state.c.subject)).scalars())

    def alerts(self, limit: int = 100) -> dict[str, Any]:
        state, log = monitor_alert_state, monitor_alert_log
        with self.database.reading() as db:
            firing = [{"rule": r.rule, "subject": r.subject, "since": r.since, "value": r.value} for r in db.execute(
                sa.select(state).where(state.c.firing.is_(True)).order_by(state.c.since))]
            entries = [{"seq": r.seq, "at": r.at, "rule": r.rule, "subject": r.subject, "kind": r.kind,
                        "value": r.value, "message": r.message, "replica": r.replica, "pid": r.pid}
                       for r in db.execute(sa.select(log).order_by(log.c.seq.desc()).limit(limit))]
            row = db.execute(sa.select(monitor_evaluator).where(monitor_evaluator.c.id == 1)).first()
        evaluator = {"replica": row.replica, "pid": row.pid, "last_run": row.at, "runs": row.runs} if row else None
        return {"firing": firing, "log": entries, "evaluator": evaluator}

    def mark_evaluation(self) -> None:
        statement = self._insert(monitor_evaluator).values(id=1, replica=self.replica, pid=os.getpid(),
                                                           at=time.time(), runs=1)
        statement = statement.on_conflict_do_update(
            index_elements=[monitor_evaluator.c.id],
            set_={"replica": statement.excluded.replica, "pid": statement.excluded.pid, "at": statement.excluded.at,
                  "runs": monitor_evaluator.c.runs + 1})
        with self.database.transaction() as db:
            db.execute(statement)


@dataclass
class AlertCondition:
    """A (rule, subject) condition as stored, inside the transaction that holds its row."""

    store: MonitorStore
    db: sa.Connection
    rule: str
    subject: str
    firing: bool
    since: float | None
    last_sent: float | None

    def update(self, firing: bool, since: float | None, last_sent: float | None, value: float | None) -> None:
        state = monitor_alert_state
        self.db.execute(state.update().where(state.c.rule == self.rule, state.c.subject == self.subject)
                        .values(firing=firing, since=since, last_sent=last_sent, value=value))

    def log(self, kind: str, value: float | None, message: str) -> int:
        """Add an event to the alert log; its sequence number is the alert's id."""
        inserted = self.db.execute(monitor_alert_log.insert().values(
            at=time.time(), rule=self.rule, subject=self.subject, kind=kind, value=value, message=message,
            replica=self.store.replica, pid=os.getpid()))
        return int(inserted.inserted_primary_key[0])
