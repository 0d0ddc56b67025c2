"""Rate limits per credential (API key id or JWT subject) and scope, counted once across every worker.

A window opens at a credential's first request and admits `count` requests until it closes; every further request
gets 429 with Retry-After (the seconds until the window closes). With Redis the count is shared by every replica (one
atomic script per request); without it, or while Redis is unavailable, the count lives in a SQLite file shared by the
workers of this machine, so a Redis outage turns the limit from per-fleet into per-machine, never into none.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from app.config import Limit
from app.sqlite import SharedDatabase
from app.state.redis import PREFIX, RedisLink, RedisUnavailable

SCHEMA = "CREATE TABLE IF NOT EXISTS rate_windows (key TEXT PRIMARY KEY, closes REAL NOT NULL, count INTEGER NOT NULL);"
# INCR and set the expiry on the first hit, in one atomic step; returns the count and the milliseconds left.
HIT_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
return {n, left}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # whole seconds until the window closes (at least 1)
    remaining: int


class LocalLimiter:
    def __init__(self, path):
        self._db = SharedDatabase(path, SCHEMA, timeout=5).connection

    def hit(self, key: str, limit: Limit) -> Decision:
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT closes, count FROM rate_windows WHERE key = ?", (key,)).fetchone()
            closes, count = (row[0], row[1] + 1) if row and row[0] > now else (now + limit.seconds, 1)
            db.execute("INSERT OR REPLACE INTO rate_windows VALUES (?,?,?)", (key, closes, count))
            if count == 1:  # now and then, forget windows that closed long ago
                db.execute("DELETE FROM rate_windows WHERE closes < ?", (now - 86400,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return _decision(count, closes - now, limit)


class RedisLimiter:
    def __init__(self, link: RedisLink, fallback: LocalLimiter):
        self.link, self.fallback = link, fallback
        self._script = link.client.register_script(HIT_SCRIPT)

    def hit(self, key: str, limit: Limit) -> Decision:
        try:
            count, left_ms = self.link.call("ratelimit", lambda client: self._script(
                keys=[f"{PREFIX}rate:{key}:{limit.count}:{limit.seconds:g}"], args=[int(limit.seconds * 1000)],
                client=client))
        except RedisUnavailable:
            return self.fallback.hit(key, limit)
        return _decision(int(count), int(left_ms) / 1000, limit)


def _decision(count: int, seconds_left: float, limit: Limit) -> Decision:
    return Decision(count <= limit.count, max(1, math.ceil(seconds_left)), max(0, limit.count - count))
