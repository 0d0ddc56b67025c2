"""API keys and the audit log in SQLite: one file shared by every worker on a machine.

Keys look like agk_<id>_<secret>; only an HMAC-SHA256 of the whole key is stored (keyed by the server pepper,
plain SHA-256 without one). Every check reads the database, so a revocation holds on every worker at once.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from app.sqlite import SharedDatabase

KEY_PATTERN = re.compile(r"agk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
LAST_USED_EVERY = 60.0  # seconds between last-used writes for one key, so reads stay cheap
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, owner TEXT NOT NULL, scopes TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, last_used_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, source TEXT, detail TEXT);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def public(self) -> dict[str, Any]:
        """Everything about the key except its secret (which is not stored anyway)."""
        return {"id": self.id, "owner": self.owner, "scopes": list(self.scopes), "created_at": _iso(self.created_at),
                "expires_at": _iso(self.expires_at), "last_used_at": _iso(self.last_used_at),
                "revoked_at": _iso(self.revoked_at)}


class KeyStore:
    def __init__(self, path: str | os.PathLike, pepper: str = ""):
        self.path = Path(path)
        self._pepper = pepper.encode()
        self._db = SharedDatabase(self.path, SCHEMA, timeout=5).connection
        self.mirror = None  # RedisKeys when AGSERVE_REDIS_URL is set
        self._last_used: dict[str, float] = {}

    def _hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest() if self._pepper \
            else hashlib.sha256(key.encode()).hexdigest()

    def create(self, owner: str, scopes: Iterable[str], expires_at: float | None = None) -> tuple[str, ApiKey]:
        """A new key: the secret is returned once and never stored."""
        key_id = secrets.token_hex(6)
        key = f"agk_{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        scopes = tuple(sorted(set(scopes)))
        row = (key_id, self._hash(key), owner, " ".join(scopes), now, expires_at, None, None)
        self._db().execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,?)", row)
        if self.mirror is not None:
            self.mirror.publish(row)
        return key, ApiKey(key_id, owner, scopes, now, expires_at, None, None)

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if the key is known, unrevoked and unexpired; None otherwise (no hint which)."""
        match = KEY_PATTERN.fullmatch(key)
        row = self._row(match.group(1)) if match else None
        stored = row[1] if row else "0" * 64
        # Compare even when nothing matched, so timing does not tell unknown ids from wrong secrets.
        if not hmac.compare_digest(self._hash(key), stored) or row is None:
            return None
        record = _record(row)
        now = time.time()
        if not record.active(now):
            return None
        if now - self._last_used.get(record.id, 0) > LAST_USED_EVERY:
            self._last_used[record.id] = now
            self._db().execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, record.id))
        return record

    def revoke(self, key_id: str) -> ApiKey | None:
        now = time.time()
        self._db().execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))
        if self.mirror is not None:  # every replica refuses it from its next request
            self.mirror.revoke(key_id, now, self._local_row(key_id))
        return self.get(key_id)

    def get(self, key_id: str) -> ApiKey | None:
        row = self._row(key_id)
        return _record(row) if row else None

    def _row(self, key_id: str):
        """The key's row: the shared copy in Redis when there is one, else this machine's (also while Redis is
        unavailable, so a Redis outage never locks every client out)."""
        if self.mirror is not None:
            row = self.mirror.row(key_id)
            if row is not None:
                return row
        return self._local_row(key_id)

    def _local_row(self, key_id: str):
        return self._db().execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()

    def share(self, mirror) -> None:
        """Keep keys in Redis too (app.state.keys.RedisKeys), publishing the ones only this machine knows."""
        self.mirror = mirror
        mirror.publish_all(self._db().execute("SELECT * FROM api_keys").fetchall())

    def list(self) -> list[ApiKey]:
        return [_record(row) for row in self._db().execute("SELECT * FROM api_keys ORDER BY created_at")]

    def active_count(self) -> int:
        now = time.time()
        return sum(1 for key in self.list() if key.active(now))

    def audit(self, actor: str, action: str, target: str | None = None, source: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        self._db().execute("INSERT INTO audit (at, actor, action, target, source, detail) VALUES (?,?,?,?,?,?)",
                           (time.time(), actor, action, target, source, json.dumps(detail or {}, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT seq, at, actor, action, target, source, detail FROM audit "
                                  "ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [{"seq": seq, "at": _iso(at), "actor": actor, "action": action, "target": target, "source": source,
                 "detail": json.loads(detail)} for seq, at, actor, action, target, source, detail in rows]


def _record(row) -> ApiKey:
    key_id, _hash, owner, scopes, created_at, expires_at, last_used_at, revoked_at = row
    return ApiKey(key_id, owner, tuple(scopes.split()), created_at, expires_at, last_used_at, revoked_at)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


DURATION = re.compile(r"([0-9]{1,12})([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_DAYS = 3650  # ten years: a longer lifetime is a typo, and its timestamp would not fit a date


def parse_duration(text: str) -> int:
    """Seconds in '90s', '15m', '12h' or '30d' (at most ten years); ValueError otherwise."""
    match = DURATION.fullmatch(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{str(text)[:40]!r} is not a duration like 15m, 12h or 30d")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION_DAYS}d")
    return seconds
