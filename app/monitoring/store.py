"""The monitoring store: one SQLite file shared by every worker on a machine.

Workers add counts into time buckets (traffic, drift cells) and record each answered request's outputs (for
feedback); readers sum the buckets of a sliding window. Counts are additive, so the sum over workers is exact.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

import orjson

from app.sqlite import SharedDatabase

BUCKET_SECONDS = 10  # granularity of every sliding window
SCHEMA = """
CREATE TABLE IF NOT EXISTS traffic (
    bucket INTEGER NOT NULL, model TEXT NOT NULL, status_class TEXT NOT NULL, latency_bin INTEGER NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (bucket, model, status_class, latency_bin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift (
    model TEXT NOT NULL, version TEXT NOT NULL, bucket INTEGER NOT NULL, feature TEXT NOT NULL, cell TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (model, version, bucket, feature, cell)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT PRIMARY KEY, at REAL NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, rows INTEGER NOT NULL,
    outputs BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS predictions_at ON predictions (at);
CREATE TABLE IF NOT EXISTS outcomes (
    prediction_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, row INTEGER NOT NULL, model TEXT NOT NULL,
    version TEXT NOT NULL, at REAL NOT NULL, actual BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_model ON outcomes (model, version, at);
CREATE TABLE IF NOT EXISTS alert_state (
    rule TEXT NOT NULL, subject TEXT NOT NULL, firing INTEGER NOT NULL, since REAL, last_sent REAL, value REAL,
    PRIMARY KEY (rule, subject));
CREATE TABLE IF NOT EXISTS alert_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
    kind TEXT NOT NULL, value REAL, message TEXT NOT NULL, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS evaluator (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER, at REAL, runs INTEGER);
"""


def bucket_of(at: float) -> int:
    return int(at // BUCKET_SECONDS)


class MonitorStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.db = SharedDatabase(self.path, SCHEMA, timeout=10, durable=False).connection


    # --- writing (one transaction per flush) -------------------------------------------------------------------
    def add(self, traffic: Iterable[tuple], drift: Iterable[tuple], predictions: Iterable[tuple]) -> None:
        """traffic (bucket, model, status_class, latency_bin, count); drift (model, version, bucket, feature, cell,
        count); predictions (request_id, at, model, version, rows, outputs)."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO traffic VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE SET count = count + "
                           "excluded.count", traffic)
            db.executemany("INSERT INTO drift VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET count = count + "
                           "excluded.count", drift)
            db.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?)", predictions)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- sliding windows ---------------------------------------------------------------------------------------
    def traffic(self, since: float, model: str | None = None) -> list[tuple[str, int, int]]:
        """(status_class, latency_bin, count) summed since a time, for one model or all requests."""
        query = "SELECT status_class, latency_bin, SUM(count) FROM traffic WHERE bucket >= ?"
        args: list[Any] = [bucket_of(since)]
        if model is not None:
            query += " AND model = ?"
            args.append(model)
        return self.db().execute(query + " GROUP BY status_class, latency_bin", args).fetchall()

    def drift_cells(self, model: str, version: str, since: float) -> dict[str, dict[str, int]]:
        cells: dict[str, dict[str, int]] = {}
        rows = self.db().execute(
            "SELECT feature, cell, SUM(count) FROM drift WHERE model = ? AND version = ? AND bucket >= ? "
            "GROUP BY feature, cell", (model, version, bucket_of(since)))
        for feature, cell, count in rows:
            cells.setdefault(feature, {})[cell] = count
        return cells

    # --- predictions and outcomes ------------------------------------------------------------------------------
    def prediction(self, request_id: str) -> dict[str, Any] | None:
        row = self.db().execute("SELECT request_id, at, model, version, rows, outputs FROM predictions "
                                "WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        return {"request_id": row[0], "at": row[1], "model": row[2], "version": row[3], "rows": row[4],
                "outputs": orjson.loads(row[5])}

    def add_outcomes(self, outcomes: Iterable[tuple]) -> None:
        """(prediction_id, request_id, row, model, version, at, actual); a repeated id replaces the earlier one."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO outcomes VALUES (?,?,?,?,?,?,?)",
                           [(*o[:6], orjson.dumps(o[6])) for o in outcomes])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def joined(self, model: str, version: str, since: float, limit: int) -> list[tuple[Any, dict[str, Any], int]]:
        """The newest outcomes of a version since a time, each with its request's outputs and its row."""
        rows = self.db().execute(
            "SELECT o.actual, o.row, p.request_id, p.outputs FROM outcomes o JOIN predictions p USING (request_id) "
            "WHERE o.model = ? AND o.version = ? AND o.at >= ? ORDER BY o.at DESC LIMIT ?",
            (model, version, since, limit)).fetchall()
        outputs: dict[str, dict[str, Any]] = {}
        joined = []
        for actual, row, request_id, blob in rows:
            if request_id not in outputs:
                outputs[request_id] = orjson.loads(blob)
            joined.append((orjson.loads(actual), outputs[request_id], row))
        return joined

    def prune(self, keep_buckets_since: float, keep_predictions_since: float) -> None:
        db = self.db()
        db.execute("DELETE FROM traffic WHERE bucket < ?", (bucket_of(keep_buckets_since),))
        db.execute("DELETE FROM drift WHERE bucket < ?", (bucket_of(keep_buckets_since),))
        db.execute("DELETE FROM outcomes WHERE at < ?", (keep_predictions_since,))
        db.execute("DELETE FROM predictions WHERE at < ?", (keep_predictions_since,))

    # --- alerts ------------------------------------------------------------------------------------------------
    def alert_state(self, rule: str, subject: str) -> tuple[bool, float | None, float | None]:
        row = self.db().execute("SELECT firing, since, last_sent FROM alert_state WHERE rule = ? AND subject = ?",
                                (rule, subject)).fetchone()
        return (bool(row[0]), row[1], row[2]) if row else (False, None, None)

    def firing_subjects(self, rule: str) -> list[str]:
        return [row[0] for row in self.db().execute(
            "SELECT subject FROM alert_state WHERE rule = ? AND firing = 1", (rule,))]

    def set_alert_state(self, rule: str, subject: str, firing: bool, since: float | None, last_sent: float | None,
                        value: float | None) -> None:
        self.db().execute("INSERT OR REPLACE INTO alert_state VALUES (?,?,?,?,?,?)",
                          (rule, subject, int(firing), since, last_sent, value))

    def log_alert(self, rule: str, subject: str, kind: str, value: float | None, message: str) -> int:
        cursor = self.db().execute(
            "INSERT INTO alert_log (at, rule, subject, kind, value, message, pid) VALUES (?,?,?,?,?,?,?)",
            (time.time(), rule, subject, kind, value, message, os.getpid()))
        return int(cursor.lastrowid)

    def alerts(self, limit: int = 100) -> dict[str, Any]:
        db = self.db()
        firing = [{"rule": r, "subject": s, "since": since, "value": v} for r, s, since, v in db.execute(
            "SELECT rule, subject, since, value FROM alert_state WHERE firing = 1 ORDER BY since")]
        log = [{"seq": seq, "at": at, "rule": r, "subject": s, "kind": k, "value": v, "message": m, "pid": pid}
               for seq, at, r, s, k, v, m, pid in db.execute(
                   "SELECT seq, at, rule, subject, kind, value, message, pid FROM alert_log ORDER BY seq DESC LIMIT ?",
                   (limit,))]
        row = db.execute("SELECT pid, at, runs FROM evaluator WHERE id = 1").fetchone()
        evaluator = {"pid": row[0], "last_run": row[1], "runs": row[2]} if row else None
        return {"firing": firing, "log": log, "evaluator": evaluator}

    def mark_evaluation(self) -> None:
        self.db().execute("INSERT INTO evaluator VALUES (1, ?, ?, 1) ON CONFLICT (id) DO UPDATE SET "
                          "pid = excluded.pid, at = excluded.at, runs = runs + 1", (os.getpid(), time.time()))
