"""The link to Redis: short timeouts on every call, and a back-off so that a dead Redis costs one timeout per
interval instead of one per request. Failures are logged once per interval and shown as metrics; the next call
after the interval tries again, so everything recovers by itself when Redis returns."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

from app import metrics

log = logging.getLogger("agserve.redis")
T = TypeVar("T")
RETRY_AFTER_SECONDS = 1.0  # how long a failed Redis is left alone before the next call tries it again
PREFIX = "agserve:"
LOG_EVERY_SECONDS = 10.0


class RedisUnavailable(Exception):
    """Redis is down, slow or refusing; the caller uses its fallback."""


class RedisLink:
    def __init__(self, url: str, timeout: float):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=0, retry_on_timeout=False)
        self._errors = (redis.RedisError, OSError)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._logged_at = -1e9
        self._failing = False
        self._gauge = metrics.REDIS_UP.labels(_safe_url(url))
        self._gauge.set(1)

    @property
    def up(self) -> bool:
        return time.monotonic() >= self._down_until

    def call(self, what: str, operation: Callable[[Any], T]) -> T:
        """operation(client), or RedisUnavailable (immediately while in back-off)."""
        if not self.up:
            raise RedisUnavailable(what)
        try:
            result = operation(self.client)
        except self._errors as exc:
            self._failed(what, exc)
            raise RedisUnavailable(what) from None
        if self._failing:
            self._failing = False
            self._gauge.set(1)
            log.warning("redis is reachable again", extra={"redis": _safe_url(self.url)})
        return result

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        metrics.REDIS_ERRORS.labels(what).inc()
        self._failing = True
        self._gauge.set(0)
        with self._lock:
            self._down_until = now + RETRY_AFTER_SECONDS
            if now - self._logged_at >= LOG_EVERY_SECONDS:  # once per interval, not once per request
                self._logged_at = now
                log.error("redis unavailable: serving without it", extra={
                    "redis": _safe_url(self.url), "operation": what, "error": f"{type(exc).__name__}: {exc}"})


def _safe_url(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
