"""Gunicorn settings for agserve. Every value comes from app.config (AGSERVE_* variables; see README).

The master never imports AutoGluon: each worker builds the app (wsgi.py) after the fork, so it loads,
persists and warms up its own copy of every served model before it accepts a request.
"""
import ctypes
import os
import shutil
import sys
import tempfile

from app.config import ConfigError, load_settings, math_threads, worker_count
from app.threads import allowed_cpus, export_thread_limits, least_used, worker_cpu_groups

try:
    _settings = load_settings()
except ConfigError as exc:  # one clear line, and the master never starts
    sys.stderr.write(f"agserve: configuration error: {exc}\n")
    sys.exit(2)

# --- Math threads ----------------------------------------------------------------------------
# Rule: workers × math threads ≤ cores. Exported first, so OpenMP/BLAS read it whenever they load.
export_thread_limits(math_threads(_settings))

# --- Metrics: one folder of prometheus_client files for all workers, emptied when the master starts --------
# Set before anything imports prometheus_client, so every worker writes there from its first metric.
_metrics_dir = _settings["METRICS_DIR"] or os.path.join(
    "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(), f"agserve-metrics-{os.getpid()}")
os.environ["AGSERVE_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from app.auth import check_startup  # noqa: E402  (after the environment above is set)

try:
    check_startup(_settings)
    if _settings["ALERT_RULES"]:  # a broken rules file stops the master, not every worker in turn
        from app.monitoring.alerts import load_alert_config
        load_alert_config(_settings["ALERT_RULES"])
except ConfigError as exc:
    sys.stderr.write(f"agserve: configuration error: {exc}\n")
    sys.exit(2)

# --- Where to listen -------------------------------------------------------------------------
bind = [_settings["BIND"]]
backlog = 2048

# --- Workers ---------------------------------------------------------------------------------
# Processes give CPU parallelism (one model copy each); threads let one worker hold several requests.
workers = worker_count(_settings)  # follows the container's CPU quota unless WEB_CONCURRENCY says otherwise
# gthread, but headers and the start of a body are gathered without a thread and slow bodies are cut off, so slow
# clients cannot hold every thread; each answer leaves in one TCP segment (app/workers.py).
worker_class = "app.workers.HeaderTimeoutWorker"
from app.workers import ConnectionShares, HeaderTimeoutWorker  # noqa: E402  (the class the workers are forked with)
HeaderTimeoutWorker.header_timeout = _settings["HEADER_TIMEOUT"]
HeaderTimeoutWorker.body_timeout = _settings["BODY_TIMEOUT"]
HeaderTimeoutWorker.body_min_rate = _settings["BODY_MIN_RATE"]
HeaderTimeoutWorker.max_body_bytes = _settings["MAX_BODY_BYTES"]
HeaderTimeoutWorker.max_connection_age = _settings["MAX_CONNECTION_AGE"]
HeaderTimeoutWorker.shares = ConnectionShares()  # mapped here, in the master, so every worker shares it
# Measured by `make bench-knobs` (BENCHMARKS.md): 2 workers × 32 threads served one-row predictions at c=32 best in 9
# of 12 model × run figures over five stops (2 × 16 won the mixed model three times, within the run-to-run spread;
# with workers pinned, 2 × 16 led both models in one run of 2 rounds and the mixed one only in the next, by less
# than the spread between runs);
# fewer threads make smaller batches, more workers than cores split the batches and the CPU between model copies.
# gunicorn's gevent worker served /health/live faster but predictions far worse (mixed: 114 vs 369 req/s, p99 4.7 s):
# a model call holds the one OS thread all its greenlets run on, so no other request moves while it runs.
threads = _settings["THREADS"]
# Each worker on a core of its own when the cores are the server's (AGSERVE_PIN_WORKERS): one-row predictions at c=32
# gained a fifth or more in interleaved runs here, as a worker's threads no longer hand the GIL across cores.
_cpu_groups = worker_cpu_groups(_settings["PIN_WORKERS"], allowed_cpus(), workers) \
    if hasattr(os, "sched_setaffinity") else []  # an OS without affinity masks (not Linux): nothing to pin with
# gunicorn parses requests with gunicorn_h1c's C parser when it is installed (requirements.txt pins it; "auto"
# falls back to the Python parser otherwise): 0.1-0.2 ms less a request at c=1 in interleaved runs on this machine.
http_parser = "auto"
# Never preload: a process that used OpenMP and then forks can hang (AutoGluon #3021).
preload_app = False


# --- Metrics hooks ---------------------------------------------------------------------------
def on_starting(server):
    """Start every server with empty metrics (counters of an earlier run must not leak in)."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir)


def child_exit(server, worker):
    """A dead worker's live gauges go; its counters stay counted."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid, _metrics_dir)
    HeaderTimeoutWorker.shares.release(worker.share_slot)  # a worker killed before it could free its slot


def on_exit(server):
    if not _settings["METRICS_DIR"]:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


# --- Memory ------------------------------------------------------------------------------------
# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MALLOC_KEEPS = 16 * 2 ** 20  # bytes: larger blocks are mapped and given back; freed ones up to this stay for reuse
MALLOC_ARENAS = 2  # request threads allocate under the GIL anyway: few arenas, so little is kept


def pre_fork(server, worker):
    """The worker's CPUs are chosen here, in the master, which knows the live workers' (a replacement takes the
    freed ones); the worker object is the master's own, so its choice stays known after the fork."""
    worker.share_slot = HeaderTimeoutWorker.shares.free_slot({w.share_slot for w in server.WORKERS.values()})
    if _cpu_groups:
        worker.cpus = least_used(_cpu_groups, [getattr(w, "cpus", None) for w in server.WORKERS.values()])


def post_fork(server, worker):
    """Memory: blocks of 16 MiB and more are mmapped, so a freed 32 MiB body goes back to the system (glibc's own
    threshold climbs to 32 MiB after the first one); smaller freed memory, up to 16 MiB at the top of each of two
    arenas, stays for the next request instead of going back and being faulted in again page by page (a 10,000-row
    JSON request met 1,600 page faults in its answer's encoding alone, 3 ms of its 40). The worker moves to its CPUs
    before it starts any thread (threads inherit them). Then the start is counted."""
    if getattr(worker, "cpus", None):
        try:
            os.sched_setaffinity(0, worker.cpus)
        except OSError as exc:  # a CPU taken away since the master started (cpuset changed): run unpinned
            server.log.warning("worker not pinned to CPUs %s: %s", sorted(worker.cpus), exc)
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_KEEPS)
        libc.mallopt(M_TRIM_THRESHOLD, MALLOC_KEEPS)
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):  # not glibc (musl): its allocator maps large blocks anyway
        pass
    from app.metrics import WORKER_STARTS
    WORKER_STARTS.inc()  # restarts show as this counter climbing (the alert WorkersRestarting watches it)


# --- Timeouts and recycling ------------------------------------------------------------------
timeout = _settings["TIMEOUT"]  # silent worker killed after this many seconds (above the slowest request)
graceful_timeout = _settings["GRACEFUL_TIMEOUT"]  # time to finish in-flight requests on HUP/TERM
keepalive = 5  # seconds an idle keep-alive connection is held
max_requests = _settings["MAX_REQUESTS"]  # recycle after this many requests; each recycle is a model load (bench-knobs)
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
logger_class = "app.workers.Logger"  # agserve logs each request itself: gunicorn's access line is never built
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
