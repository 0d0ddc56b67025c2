"""Typed access to what create_app registers in `app.extensions`: one name per service, one function per look-up,
so a reader (and a type checker) sees what each one is instead of a string key."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from app.auth.keys import KeyStore
    from app.auth.tokens import TokenService
    from app.db import Database
    from app.inference.dataplane import DataPlane
    from app.inference.registry import ModelRegistry
    from app.monitoring.monitor import Monitor
    from app.predictionlog import PredictionLog
    from app.state.redis import RedisLink
    from app.tracing import Tracer

DATABASE = "agserve.db"
KEYS = "agserve.keys"
TOKENS = "agserve.tokens"
REDIS = "agserve.redis"
RATE_LIMITER = "agserve.ratelimiter"
CACHE = "agserve.cache"
MODELS = "agserve.models"
PREDICTION_LOG = "agserve.prediction_log"
MONITOR = "agserve.monitor"
DATA_PLANE = "agserve.data_plane"
TRACER = "agserve.tracer"


def _app(app: Flask | None) -> Flask:
    return app if app is not None else current_app


def database(app: Flask | None = None) -> "Database":
    return _app(app).extensions[DATABASE]


def keystore(app: Flask | None = None) -> "KeyStore":
    return _app(app).extensions[KEYS]


def token_service(app: Flask | None = None) -> "TokenService":
    return _app(app).extensions[TOKENS]


def redis_link(app: Flask | None = None) -> "RedisLink | None":
    return _app(app).extensions.get(REDIS)


def rate_limiter(app: Flask | None = None):
    """A LocalLimiter or RedisLimiter; None before app.state has registered one."""
    return _app(app).extensions.get(RATE_LIMITER)


def cache(app: Flask | None = None):
    """A LocalCache or RedisCache; None when AGSERVE_CACHE is off."""
    return _app(app).extensions.get(CACHE)


def served_models(app: Flask | None = None) -> "ModelRegistry":
    return _app(app).extensions[MODELS]


def prediction_log(app: Flask | None = None) -> "PredictionLog | None":
    return _app(app).extensions.get(PREDICTION_LOG)


def monitor(app: Flask | None = None) -> "Monitor | None":
    return _app(app).extensions.get(MONITOR)


def data_plane(app: Flask | None = None) -> "DataPlane":
    return _app(app).extensions[DATA_PLANE]


def tracer(app: Flask | None = None) -> "Tracer | None":
    """This worker's OpenTelemetry tracer; None when AGSERVE_OTLP_ENDPOINT is empty (tracing off)."""
    return _app(app).extensions.get(TRACER)
