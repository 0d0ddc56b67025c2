"""The prediction log, for retraining and audit: one JSON line per request, in files under a directory.

A line holds the request's rows column by column ("inputs": {feature: [values]}), its "predictions" and
"probabilities" in row order, and "rows"; row i is prediction `<request_id>:<i>`. One line per request keeps logging
10,000 rows to one encoder call instead of 10,000.

Each worker appends to its own file (no interleaving between processes); a request's lines go out in one write()
on an O_APPEND descriptor before its response is sent, so a killed worker leaves only whole lines behind and never
loses a prediction it answered. Files rotate by size and age; rows can be sampled and fields dropped for privacy.
"""
from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson


class PredictionLog:
    def __init__(self, directory: str | os.PathLike, sample_rate: float = 1.0, drop_fields: Iterable[str] = (),
                 max_bytes: int = 64 * 2 ** 20, rotate_seconds: float = 3600):
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.drop_fields = frozenset(drop_fields)
        self.max_bytes = max_bytes
        self.rotate_seconds = rotate_seconds
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._opened = 0.0
        self._size = 0
        self._sequence = 0

    def write(self, request_id: str, model: str, version: str, inputs: dict[str, Any], predictions: list[Any],
              probabilities: list[dict[str, float]] | None) -> bool:
        """Log one request (unless sampled out); return whether it was written."""
        if self.sample_rate < 1 and random.random() >= self.sample_rate:
            return False
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "request_id": request_id, "model": model, "version": version, "rows": len(predictions),
                  "inputs": {name: column for name, column in inputs.items() if name not in self.drop_fields},
                  "predictions": predictions, "probabilities": probabilities}
        # numpy columns go straight to the encoder; NaN becomes null.
        data = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            fd = self._file(len(data))
            view = memoryview(data)
            while view:  # one write() in practice; a partial write is finished before anyone else writes
                view = view[os.write(fd, view):]
            self._size += len(data)
        return True

    def _file(self, incoming: int) -> int:
        now = time.time()
        stale = self._fd is None or self._pid != os.getpid() or now - self._opened > self.rotate_seconds or \
            (self._size and self._size + incoming > self.max_bytes)
        if stale:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._sequence += 1
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            path = self.directory / f"predictions-{stamp}-{os.getpid()}-{self._sequence}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._pid, self._opened, self._size = os.getpid(), now, 0
        return self._fd
