"""Rate-limit settings, and the documented fallback: with Redis unreachable, limits hold per machine."""
from __future__ import annotations

import time

import pytest

from app.config import ConfigError, Limit, load_settings
from app.state.ratelimit import LocalLimiter, RedisLimiter
from app.state.redis import RedisLink
from tests.support.servers import free_port


@pytest.mark.parametrize("text, limit", [("100/minute", Limit(100, 60)), ("5/second", Limit(5, 1)),
                                         ("20/30s", Limit(20, 30.0)), (" 1 / hour ", Limit(1, 3600)), ("", None)])
def test_limits_are_read_from_settings(text, limit):
    assert load_settings({"AGSERVE_RATE_LIMIT_PREDICT": text})["RATE_LIMIT_PREDICT"] == limit


@pytest.mark.parametrize("text", ["100", "0/minute", "10/fortnight", "ten/minute", "5/0s"])
def test_bad_limits_stop_start_up_in_one_line(text):
    with pytest.raises(ConfigError, match="AGSERVE_RATE_LIMIT_ADMIN"):
        load_settings({"AGSERVE_RATE_LIMIT_ADMIN": text})


def test_without_redis_the_limit_holds_per_machine(tmp_path):
    dead = RedisLink(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)  # nothing listens there
    limiter = RedisLimiter(dead, LocalLimiter(tmp_path / "limits.sqlite3"))
    started = time.monotonic()
    decisions = [limiter.hit("predict:key:abc", Limit(5, 60)) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert all(1 <= d.retry_after <= 60 for d in decisions)
    assert time.monotonic() - started < 1.0  # one failed attempt, then Redis is left alone for a second
