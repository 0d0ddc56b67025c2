"""API keys and the audit log, in the database (app.db): the only place that can grant or refuse a key.

Keys look like agk_<id>_<secret>; only an HMAC-SHA256 of the whole key is stored (keyed by the server pepper,
plain SHA-256 without one). Each worker trusts a key it verified for at most KEY_CACHE_SECONDS (≤ 1 s) after the
database last confirmed it; a background thread re-confirms every remembered key in one query twice per that time.
So a revocation, which returns only once the database has it, reaches every worker of every replica within
KEY_CACHE_SECONDS. Nothing else (Redis included) is ever consulted, so nothing else can widen a key's scopes or
bring a revoked key back.

While the database is unreachable: keys this worker saw confirmed within KEY_GRACE_SECONDS keep working (a key
revoked in the last KEY_CACHE_SECONDS before the outage may too), any other key gets 503 (never 200, never a 401
that would look final), and creating or revoking a key fails loudly with 503, so no revocation is ever lost.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa

from app.db import Database, DatabaseUnavailable
from app.db.schema import api_keys, audit

log = logging.getLogger("agserve.keys")
KEY_PATTERN = re.compile(r"agk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
LAST_USED_EVERY = 60.0  # seconds between last-used writes for one key, so reads stay cheap
VERIFIED_MAX = 10_000  # keys one worker remembers (least recently verified go first)
RETRY_AFTER_SECONDS = 1.0  # after a failed database call, verifications use the grace period this long


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
    def __init__(self, database: Database, pepper: str = "", cache_seconds: float = 0.5, grace_seconds: float = 300):
        self.database = database
        self._pepper = pepper.encode()
        self.cache_seconds, self.grace_seconds = cache_seconds, grace_seconds
        self._verified: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()  # key hash → (record, checked at)
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}
        self._down_until = 0.0
        self._refresher_pid = 0

    def _hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest() if self._pepper \
            else hashlib.sha256(key.encode()).hexdigest()

    def create(self, owner: str, scopes: Iterable[str], expires_at: float | None = None) -> tuple[str, ApiKey]:
        """A new key: the secret is returned once and never stored."""
        key_id = secrets.token_hex(6)
        key = f"agk_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, owner, tuple(sorted(set(scopes))), time.time(), expires_at, None, None)
        with self.database.transaction() as db:
            db.execute(api_keys.insert().values(
                id=key_id, hash=self._hash(key), owner=owner, scopes=" ".join(record.scopes),
                created_at=record.created_at, expires_at=expires_at))
        return key, record

    def verify(self, key: str) -> ApiKey | None:
        """The key's record if the key is known, unrevoked and unexpired; None otherwise (no hint which).
        DatabaseUnavailable when the database cannot say and this worker has not verified the key recently."""
        match = KEY_PATTERN.fullmatch(key)
        digest = self._hash(key)
        now, clock = time.time(), time.monotonic()
        self._start_refresher()
        with self._lock:
            remembered = self._verified.get(digest)
        if remembered is not None and clock - remembered[1] < self.cache_seconds:
            return remembered[0] if remembered[0].active(now) else None
        try:
            if clock < self._down_until:
                raise DatabaseUnavailable("the database failed less than a second ago")
            row = self._row(match.group(1)) if match else None
        except DatabaseUnavailable:
            self._down_until = clock + RETRY_AFTER_SECONDS
            if remembered is not None and clock - remembered[1] < self.grace_seconds and remembered[0].active(now):
                return remembered[0]
            raise
        # Compare even when nothing matched, so timing does not tell unknown ids from wrong secrets.
        if not hmac.compare_digest(digest, row.hash if row else "0" * 64) or row is None:
            self._forget(digest)
            return None
        record = _record(row)
        if not record.active(now):
            self._forget(digest)
            return None
        with self._lock:
            self._verified[digest] = (record, clock)
            self._verified.move_to_end(digest)
            while len(self._verified) > VERIFIED_MAX:
                self._verified.popitem(last=False)
        self._touch(record.id, now)
        return record

    def _start_refresher(self) -> None:
        if self.cache_seconds > 0 and self._refresher_pid != os.getpid():  # once per worker, after the fork
            self._refresher_pid = os.getpid()
            threading.Thread(target=self._refresh_loop, name="agserve-key-refresher", daemon=True).start()

    def _refresh_loop(self) -> None:
        while True:
            time.sleep(self.cache_seconds / 2)
            try:
                self.refresh()
            except DatabaseUnavailable:
                pass  # the remembered keys age towards their grace limit
            except Exception:  # keep refreshing whatever happens
                log.exception("refreshing verified keys failed")

    def refresh(self) -> None:
        """Re-confirm every remembered key against the database; forget the revoked, expired and deleted ones."""
        clock = time.monotonic()
        with self._lock:
            ids = sorted({record.id for record, _ in self._verified.values()})
        asked, rows = set(ids), {}
        for start in range(0, len(ids), 500):
            with self.database.reading() as db:
                chunk = ids[start:start + 500]
                rows.update({row.id: row for row in db.execute(sa.select(api_keys).where(api_keys.c.id.in_(chunk)))})
        now = time.time()
        with self._lock:
            for digest, (record, _) in list(self._verified.items()):
                row = rows.get(record.id)
                if record.id not in asked:
                    continue  # remembered after this query started
                if row is None or not _record(row).active(now):
                    del self._verified[digest]
                else:
                    self._verified[digest] = (_record(row), clock)

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._verified.pop(digest, None)

    def _touch(self, key_id: str, now: float) -> None:
        """Record the last use now and then; a failure here must not fail the request."""
        if now - self._last_used.get(key_id, 0) <= LAST_USED_EVERY:
            return
        self._last_used[key_id] = now
        try:
            with self.database.transaction() as db:
                db.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=now))
        except DatabaseUnavailable as exc:
            log.warning("last use of a key not recorded: %s", exc, extra={"key_id": key_id})

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key; returns only once the database has the revocation (DatabaseUnavailable otherwise)."""
        with self.database.transaction() as db:
            db.execute(api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                       .values(revoked_at=time.time()))
        with self._lock:  # this worker refuses it at once; the others within cache_seconds
            for digest in [d for d, (record, _) in self._verified.items() if record.id == key_id]:
                del self._verified[digest]
        return self.get(key_id)

    def get(self, key_id: str) -> ApiKey | None:
        row = self._row(key_id)
        return _record(row) if row else None

    def _row(self, key_id: str):
        with self.database.reading() as db:
            return db.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()

    def list(self) -> list[ApiKey]:
        with self.database.reading() as db:
            rows = db.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_record(row) for row in rows]

    def active_count(self) -> int:
        now = time.time()
        return sum(1 for key in self.list() if key.active(now))

    def audit(self, actor: str, action: str, target: str | None = None, source: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        with self.database.transaction() as db:
            db.execute(audit.insert().values(at=time.time(), actor=actor, action=action, target=target, source=source,
                                             detail=json.dumps(detail or {}, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.database.reading() as db:
            rows = db.execute(sa.select(audit).order_by(audit.c.seq.desc()).limit(limit)).all()
        return [{"seq": row.seq, "at": _iso(row.at), "actor": row.actor, "action": row.action, "target": row.target,
                 "source": row.source, "detail": json.loads(row.detail)} for row in rows]


def _record(row) -> ApiKey:
    return ApiKey(row.id, row.owner, tuple(row.scopes.split()), row.created_at, row.expires_at, row.last_used_at,
                  row.revoked_at)


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
