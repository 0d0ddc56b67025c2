"""The prediction log, for retraining and audit: one JSON line per request, in files under a directory.

A line holds the request's rows column by column ("inputs": {feature: [values]}), its "predictions" and
"probabilities" in row order, and "rows"; row i is prediction `<request_id>:<i>`. One line per request keeps logging
10,000 rows to one encoder call instead of 10,000.

Each worker appends to its own file (no interleaving between processes); a request's lines go out in one write()
on an O_APPEND descriptor before its response is sent, so a killed worker leaves only whole lines behind and never
loses a prediction it answered. Files rotate by size and age; rows can be sampled and fields dropped for privacy.

A write that fails (disk full, I/O error) is taken back to the last whole line, counted in
agserve_records_lost_total{store="prediction_log"} and logged once a minute; then, by the failure policy, the
request is answered anyway ("continue") or refused ("refuse": RecordNotKept). Retention deletes the oldest files past
a total size or an age, so the log cannot fill its disk by itself.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from app.metrics import LostRecords

log = logging.getLogger("agserve.predictionlog")


class RecordNotKept(Exception):
    """A record could not be written and the failure policy is "refuse"."""


class PredictionLog:
    def __init__(self, directory: str | os.PathLike, sample_rate: float = 1.0, drop_fields: Iterable[str] = (),
                 max_bytes: int = 64 * 2 ** 20, rotate_seconds: float = 3600, on_failure: str = "continue",
                 max_total_bytes: int | None = None, retention_seconds: float | None = None):
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.drop_fields = frozenset(drop_fields)
        self.max_bytes = max_bytes
        self.rotate_seconds = rotate_seconds
        self.on_failure = on_failure
        self.max_total_bytes = max_total_bytes
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._closed: set[Path] = set()  # files this worker rotated away from: nobody writes them any more
        self._pid = 0
        self._opened = 0.0
        self._size = 0
        self._sequence = 0
        self._lost = LostRecords("prediction_log", log)

    def write(self, request_id: str, model: str, version: str, inputs: dict[str, Any], predictions: list[Any],
              probabilities: list[dict[str, float]] | orjson.Fragment | None) -> bool:
        """Log one request (unless sampled out); return whether it was written. A failed write returns False
        ("continue") or raises RecordNotKept ("refuse"). probabilities may be their JSON already (a Fragment)."""
        if self.sample_rate < 1 and random.random() >= self.sample_rate:
            return False
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "request_id": request_id, "model": model, "version": version, "rows": len(predictions),
                  "inputs": {name: column for name, column in inputs.items() if name not in self.drop_fields},
                  "predictions": predictions, "probabilities": probabilities}
        # numpy columns go straight to the encoder; NaN becomes null.
        data = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            try:
                fd = self._file(len(data))
                self._append(fd, data)
            except OSError as exc:
                self._lost(1, "prediction log write failed: records are being lost", policy=self.on_failure,
                           error=exc.strerror or type(exc).__name__, request_id=request_id)
                if self.on_failure == "refuse":
                    raise RecordNotKept("the prediction log cannot be written") from None
                return False
        return True

    def _append(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:  # one write() in practice; a partial write is finished before anyone else writes
                view = view[os.write(fd, view):]
        except OSError:
            os.ftruncate(fd, self._size)  # a reader must never meet half a line
            raise
        self._size += len(data)

    def _file(self, incoming: int) -> int:
        now = time.time()
        stale = self._fd is None or self._pid != os.getpid() or now - self._opened > self.rotate_seconds or \
            (self._size and self._size + incoming > self.max_bytes)
        if stale:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
                self._closed.add(self._path)
            self._fd = None
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sequence += 1
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            path = self.directory / f"predictions-{stamp}-{os.getpid()}-{self._sequence}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._path, self._pid, self._opened, self._size = path, os.getpid(), now, 0
            self.apply_retention(now)
        return self._fd

    def apply_retention(self, now: float | None = None) -> list[Path]:
        """Delete the oldest files past the age or total-size limit; return them. Only files nobody writes any more
        are candidates: those this worker rotated away from, and those untouched for longer than the rotation age
        (their worker rotates before its next write)."""
        if self.max_total_bytes is None and self.retention_seconds is None:
            return []
        now = time.time() if now is None else now
        files = []
        for path in self.directory.glob("predictions-*.jsonl"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # another worker's retention got there first
                continue
            files.append((stat.st_mtime, path, stat.st_size))
        files.sort()
        total = sum(size for _, _, size in files)
        deleted = []
        for mtime, path, size in files:
            too_old = self.retention_seconds is not None and now - mtime > self.retention_seconds
            too_big = self.max_total_bytes is not None and total > self.max_total_bytes
            if not (too_old or too_big):
                break
            if path == self._path or not (path in self._closed or now - mtime > self.rotate_seconds):
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            self._closed.discard(path)
            total -= size
            deleted.append(path)
        return deleted
