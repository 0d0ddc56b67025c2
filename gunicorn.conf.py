"""Gunicorn settings for agserve. Every value comes from app.config (AGSERVE_* variables; see README).

The master never imports AutoGluon: each worker builds the app (wsgi.py) after the fork, so it loads,
persists and warms up its own copy of every served model before it accepts a request.
"""
import os
import sys

from app.auth import check_startup
from app.config import ConfigError, load_settings, math_threads
from app.threads import export_thread_limits

try:
    _settings = load_settings()
    check_startup(_settings)
except ConfigError as exc:  # one clear line, and the master never starts
    sys.stderr.write(f"agserve: configuration error: {exc}\n")
    sys.exit(2)

# --- Where to listen -------------------------------------------------------------------------
bind = [_settings["BIND"]]
backlog = 2048

# --- Workers ---------------------------------------------------------------------------------
# Processes give CPU parallelism (one model copy each); threads let one worker hold several requests.
workers = _settings["WORKERS"]
worker_class = "gthread"
threads = _settings["THREADS"]
# Never preload: a process that used OpenMP and then forks can hang (AutoGluon #3021).
preload_app = False

# --- Math threads ----------------------------------------------------------------------------
# Rule: workers × math threads ≤ cores. Exported before the fork so OpenMP/BLAS read it when they load.
export_thread_limits(math_threads(_settings))

# --- Timeouts and recycling ------------------------------------------------------------------
timeout = _settings["TIMEOUT"]  # silent worker killed after this many seconds (above the slowest request)
graceful_timeout = _settings["GRACEFUL_TIMEOUT"]  # time to finish in-flight requests on HUP/TERM
keepalive = 5  # seconds an idle keep-alive connection is held
max_requests = _settings["MAX_REQUESTS"]  # recycle a worker after this many requests (0: never)
max_requests_jitter = _settings["MAX_REQUESTS_JITTER"]  # spread recycling so workers do not restart together

# --- Request limits --------------------------------------------------------------------------
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# --- Heartbeat -------------------------------------------------------------------------------
# Workers touch a file per heartbeat; on tmpfs that never blocks on a slow disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# --- Logging: JSON lines on stdout; the app writes one line per request, so no access log --------
accesslog = None
errorlog = "-"
loglevel = _settings["LOG_LEVEL"]
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"], "level": "WARNING"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": _settings["LOG_LEVEL"].upper(), "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
}
proc_name = "agserve"
