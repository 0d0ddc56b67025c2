"""API keys in Redis, beside each machine's SQLite: a key created or revoked through any replica holds on all of
them at their next request. Rows have the SQLite table's columns; a revocation always wins over an older copy."""
from __future__ import annotations

import logging

from app.state.redis import PREFIX, RedisLink, RedisUnavailable

log = logging.getLogger("agserve.keys")
FIELDS = ("id", "hash", "owner", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
NUMBERS = {"created_at", "expires_at", "last_used_at", "revoked_at"}


class RedisKeys:
    def __init__(self, link: RedisLink):
        self.link = link

    def row(self, key_id: str) -> tuple | None:
        """The shared row, or None when Redis has none or cannot be reached (the caller then asks SQLite)."""
        try:
            stored = self.link.call("keys.get", lambda client: client.hgetall(PREFIX + "key:" + key_id))
        except RedisUnavailable:
            return None
        if not stored:
            return None
        values = {k.decode(): v.decode() for k, v in stored.items()}
        return tuple((float(values[f]) if values.get(f) else None) if f in NUMBERS else values.get(f) for f in FIELDS)

    def publish(self, row: tuple) -> None:
        self._best_effort("keys.publish", lambda client: client.hset(PREFIX + "key:" + row[0], mapping=_mapping(row)))

    def revoke(self, key_id: str, at: float, local_row: tuple | None) -> None:
        def write(client):
            name = PREFIX + "key:" + key_id
            if client.exists(name):
                if not client.hget(name, "revoked_at"):  # the first revocation's time stays
                    client.hset(name, "revoked_at", repr(at))
            elif local_row is not None:
                client.hset(name, mapping=_mapping(local_row[:7] + (local_row[7] or at,)))
        self._best_effort("keys.revoke", write)

    def publish_all(self, rows: list[tuple]) -> None:
        """Publish keys Redis lacks, and revocations it has not heard of."""
        def write(client):
            for row in rows:
                name = PREFIX + "key:" + row[0]
                if not client.exists(name):
                    client.hset(name, mapping=_mapping(row))
                elif row[7] is not None and not client.hget(name, "revoked_at"):
                    client.hset(name, "revoked_at", repr(row[7]))
        self._best_effort("keys.sync", write)

    def _best_effort(self, what: str, operation) -> None:
        try:
            self.link.call(what, operation)
        except RedisUnavailable:
            log.error("API key change not shared through redis: this machine has it, other replicas may not",
                      extra={"operation": what})


def _mapping(row: tuple) -> dict[str, str]:
    return {field: ("" if value is None else (repr(value) if field in NUMBERS else str(value)))
            for field, value in zip(FIELDS, row)}
