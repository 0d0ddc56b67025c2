"""The prediction cache: one entry per row, keyed by a hash of the model, its version and activation, and the
row's validated values. A new version, or a promote/rollback (a new activation), never meets old answers.

With Redis (AGSERVE_REDIS_URL) the cache is shared by every worker and replica, and every entry carries an
HMAC-SHA256 of its Redis key and value under AGSERVE_CACHE_SECRET: an entry written by anyone else is a miss, never
an answer. Without Redis each worker keeps an in-process LRU, emptied in every worker by DELETE /admin/cache
through a generation file they all watch.
Entries are the model's own answers, stored and returned unchanged (JSON floats round-trip exactly).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.state.redis import PREFIX, RedisLink, RedisUnavailable

log = logging.getLogger("agserve.cache")
CACHE_PREFIX = PREFIX + "cache:"
MAC_BYTES = 32  # HMAC-SHA256, stored in front of the JSON answer


def row_keys(namespace: str, columns: dict[str, Any], names: list[str], n: int) -> list[str]:
    """One key per row: blake2b of the namespace and the row's validated values, in feature order."""
    values = []
    for name in names:
        column = columns[name]
        if isinstance(column, np.ndarray):
            column = [None if math.isnan(v) else v for v in column.tolist()]
        values.append(column)
    prefix = namespace.encode() + b"\x00"
    return [hashlib.blake2b(prefix + orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS), digest_size=16).hexdigest()
            for row in (zip(*values) if values else [()] * n)]


class LocalCache:
    """An LRU per worker with a TTL; DELETE /admin/cache reaches every worker through the generation file."""

    shared = False

    def __init__(self, max_rows: int, ttl: float, generation_file: str | os.PathLike):
        self.max_rows, self.ttl = max_rows, ttl
        self.generation_file = Path(generation_file)
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = self._read_generation()

    def _read_generation(self) -> int:
        try:
            return os.stat(self.generation_file).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _check_generation(self) -> None:
        generation = self._read_generation()
        if generation != self._generation:
            self._generation = generation
            self._entries.clear()

    def get_many(self, keys: list[str]) -> list[Any | None]:
        now = time.monotonic()
        found = []
        with self._lock:
            self._check_generation()
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry[0] > now:
                    self._entries.move_to_end(key)
                    found.append(entry[1])
                else:
                    found.append(None)
        return found

    def set_many(self, items: dict[str, Any]) -> None:
        expires = time.monotonic() + self.ttl
        with self._lock:
            for key, value in items.items():
                self._entries[key] = (expires, value)
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_rows:
                self._entries.popitem(last=False)

    def clear(self) -> int:
        """Empty this worker's cache now and every other worker's at its next lookup."""
        self.generation_file.parent.mkdir(parents=True, exist_ok=True)
        self.generation_file.touch()
        os.utime(self.generation_file, ns=(time.time_ns(), time.time_ns()))
        with self._lock:
            cleared = len(self._entries)
            self._entries.clear()
            self._generation = self._read_generation()
        return cleared


class RedisCache:
    """Shared by every worker and replica; while Redis is unavailable, rows are simply not cached."""

    shared = True

    def __init__(self, link: RedisLink, ttl: float, secret: str = ""):
        self.link, self.ttl = link, ttl
        # Without a configured secret only this worker can sign, so only its own entries are trusted.
        self._secret = secret.encode() or secrets.token_bytes(32)

    def _mac(self, name: str, blob: bytes) -> bytes:
        return hmac.new(self._secret, name.encode() + b"\x00" + blob, hashlib.sha256).digest()

    def get_many(self, keys: list[str]) -> list[Any | None]:
        names = [CACHE_PREFIX + k for k in keys]
        try:
            stored = self.link.call("cache.get", lambda r: r.mget(names))
        except RedisUnavailable:
            return [None] * len(keys)
        found = []
        for name, entry in zip(names, stored):
            if entry is not None and hmac.compare_digest(entry[:MAC_BYTES], self._mac(name, entry[MAC_BYTES:])):
                found.append(orjson.loads(entry[MAC_BYTES:]))
            else:
                if entry is not None:
                    log.warning("a cache entry with a wrong signature was ignored", extra={"cache_key": name})
                found.append(None)
        return found

    def set_many(self, items: dict[str, Any]) -> None:
        def write(client):
            pipeline = client.pipeline(transaction=False)
            for key, value in items.items():
                name, blob = CACHE_PREFIX + key, orjson.dumps(value)
                pipeline.set(name, self._mac(name, blob) + blob, px=int(self.ttl * 1000))
            pipeline.execute()
        try:
            self.link.call("cache.set", write)
        except RedisUnavailable:
            pass

    def clear(self) -> int:
        def unlink_all(client):
            cleared = 0
            for batch in _batched(client.scan_iter(match=CACHE_PREFIX + "*", count=1000), 1000):
                cleared += client.unlink(*batch)
            return cleared
        return self.link.call("cache.clear", unlink_all)


def _batched(iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
