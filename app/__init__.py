"""agserve: a production prediction server for AutoGluon tabular models.

create_app reads like a table of contents; wsgi.py is the only place an app is built at import time.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Mapping

from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, proxies, logging, tracing and request hooks, errors, blueprints, commands, the served
    models, monitoring, then the data plane every prediction goes through."""
    from app.config import load_settings

    from app.jsonio import OrjsonProvider

    Flask.json_provider_class = OrjsonProvider
    app = Flask(__name__, static_folder=None)
    app.config.update(load_settings(overrides=config))
    # Werkzeug truncates a chunked body at this limit instead of refusing it: read one byte more and check.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"] + 1
    app.debug = app.config["DEBUG"]

    trust_proxies(app)
    configure_logging(app)
    register_tracing(app)
    register_request_hooks(app)
    register_error_handlers(app)
    register_database(app)
    register_auth(app)
    register_shared_state(app)
    register_blueprints(app)
    register_commands(app)
    register_models(app)
    register_monitoring(app)
    register_data_plane(app)
    return app


def trust_proxies(app: Flask) -> None:
    """Behind AGSERVE_TRUSTED_PROXIES proxies, the client address and scheme are the ones they forwarded."""
    count = app.config["TRUSTED_PROXIES"]
    if count:
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)


def configure_logging(app: Flask) -> None:
    from app import logs
    logs.configure_logging(app)


def register_tracing(app: Flask) -> None:
    """With AGSERVE_OTLP_ENDPOINT set, a serving process (a gunicorn worker, after the fork) exports its spans;
    otherwise nothing is built, so the request hooks register no tracing at all."""
    if not (app.config["OTLP_ENDPOINT"] and app.config["LOAD_MODELS_ON_START"]):
        return
    from app import extensions
    from app.tracing import Tracer
    app.extensions[extensions.TRACER] = Tracer(app.config["OTLP_ENDPOINT"], app.config["OTEL_SERVICE_NAME"],
                                               replica_name(app.config))


def register_request_hooks(app: Flask) -> None:
    from app.api import hooks
    hooks.init_app(app)


def register_error_handlers(app: Flask) -> None:
    from app import errors
    errors.register_error_handlers(app)


def register_database(app: Flask) -> None:
    """The source of truth (SQLite file or PostgreSQL), its schema brought up to date once for the whole fleet."""
    from app import extensions
    from app.db import open_database
    app.extensions[extensions.DATABASE] = open_database(app.config)


def register_auth(app: Flask) -> None:
    from app import auth
    auth.check_startup(app.config)
    auth.init_app(app)


def register_shared_state(app: Flask) -> None:
    from app import state
    state.init_app(app)


def register_blueprints(app: Flask) -> None:
    from app.api import admin, docs, explain, feedback, health, models, prediction, prometheus, v2
    from app.auth import undeclared_routes
    for module in (health, prediction, explain, models, admin, feedback, prometheus, v2, docs):
        app.register_blueprint(module.bp)
    if undeclared_routes(app):  # deny by default: a route must say who may call it
        raise RuntimeError(f"routes without @public or @require_scope: {', '.join(undeclared_routes(app))}")


def register_commands(app: Flask) -> None:
    from app import cli
    cli.init_app(app)


def register_models(app: Flask) -> None:
    """Open the repository and the prediction log; in a serving process, load and warm up every model now."""
    from app import extensions
    from app.config import math_threads
    from app.inference import ModelRegistry
    from app.inference.activations import ServingReport
    from app.threads import apply_thread_limits

    registry = ModelRegistry(model_repository(app), names=app.config["MODELS"], default=app.config["DEFAULT_MODEL"],
                             report=ServingReport(extensions.database(app), replica_name(app.config),
                                                  stale_after=max(10.0, 5 * app.config["RELOAD_INTERVAL"])))
    app.extensions[extensions.MODELS] = registry
    if app.config["PREDICTION_LOG_DIR"]:
        from app.predictionlog import PredictionLog

        app.extensions[extensions.PREDICTION_LOG] = PredictionLog(
            app.config["PREDICTION_LOG_DIR"], app.config["PREDICTION_LOG_SAMPLE"], app.config["PREDICTION_LOG_DROP"],
            app.config["PREDICTION_LOG_MAX_MB"] * 2 ** 20, app.config["PREDICTION_LOG_ROTATE_SECONDS"],
            app.config["ON_RECORD_FAILURE"], app.config["PREDICTION_LOG_MAX_TOTAL_MB"] * 2 ** 20,
            app.config["PREDICTION_LOG_RETENTION_DAYS"] * 86400)
    if app.config["LOAD_MODELS_ON_START"]:
        registry.refresh(app.config)
        app.config["THREAD_POOLS"] = apply_thread_limits(math_threads(app.config))
        if app.config["RELOAD_INTERVAL"] > 0:
            registry.watch(app.config, app.config["RELOAD_INTERVAL"])


def model_repository(app: Flask):
    """The model folder, with activation kept in the database."""
    from app import extensions
    from app.inference import ModelRepository
    from app.inference.activations import DatabaseActivations

    root = app.config["MODEL_REPOSITORY"]
    return ModelRepository(root, DatabaseActivations(extensions.database(app), Path(root)))


def replica_name(settings: Mapping[str, Any]) -> str:
    return settings["REPLICA_NAME"] or socket.gethostname()


def register_monitoring(app: Flask) -> None:
    """The monitoring tables (in the database, shared by the fleet) and, in a serving process, this worker's
    collector and its bid to be the one that evaluates alerts."""
    if not app.config["MONITORING"]:
        return
    from app.monitoring.alerts import load_alert_config
    from app.monitoring.monitor import Monitor

    rules = load_alert_config(app.config["ALERT_RULES"]) if app.config["ALERT_RULES"] else None
    monitor = Monitor(app.config, app.extensions["agserve.models"], app.extensions["agserve.db"],
                      replica_name(app.config), rules)
    app.extensions["agserve.monitor"] = monitor
    if app.config["LOAD_MODELS_ON_START"]:
        monitor.start()


def register_data_plane(app: Flask) -> None:
    """The one path every protocol's prediction takes: the registry, then the cache, log and monitor it feeds."""
    from app import extensions
    from app.inference.dataplane import DataPlane

    app.extensions[extensions.DATA_PLANE] = DataPlane(
        extensions.served_models(app), extensions.cache(app), extensions.prediction_log(app),
        extensions.monitor(app), refuse_unrecorded=app.config["ON_RECORD_FAILURE"] == "refuse",
        explain_concurrency=app.config["EXPLAIN_CONCURRENCY"])
