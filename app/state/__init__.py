"""State shared beyond one worker that may be lost or recomputed: the prediction cache and rate limits.

AGSERVE_REDIS_URL set: both live in Redis, shared by every worker of every replica (cached answers signed with
AGSERVE_CACHE_SECRET). Unset: an LRU cache in each worker, and rate limits in a SQLite file shared by the workers
of this machine. What must survive (API keys, activation, the audit log) is in the database (app.db), never here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def init_app(app: "Flask") -> None:
    from app import extensions
    from app.state.cache import LocalCache, RedisCache
    from app.state.ratelimit import LocalLimiter, RedisLimiter

    config = app.config
    state_dir = Path(config["AUTH_DB"]).parent
    local_limiter = LocalLimiter(state_dir / "ratelimits.sqlite3")
    cache = None
    if config["REDIS_URL"]:
        from app.state.redis import RedisLink

        link = RedisLink(config["REDIS_URL"], config["REDIS_TIMEOUT"])
        app.extensions[extensions.REDIS] = link
        app.extensions[extensions.RATE_LIMITER] = RedisLimiter(link, local_limiter)
        if config["CACHE"]:
            cache = RedisCache(link, config["CACHE_TTL_SECONDS"], config["CACHE_SECRET"])
    else:
        app.extensions[extensions.RATE_LIMITER] = local_limiter
        if config["CACHE"]:
            cache = LocalCache(config["CACHE_MAX_ROWS"], config["CACHE_TTL_SECONDS"], state_dir / "cache.generation")
    app.extensions[extensions.CACHE] = cache
