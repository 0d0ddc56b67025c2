"""Settings: defaults in code, then config/<AGSERVE_ENV>.py, then AGSERVE_* variables, then a test mapping.

This module imports nothing heavy, so gunicorn.conf.py can validate settings in the master.
"""
from __future__ import annotations

import os
import re
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
ENVIRONMENTS = ("development", "production", "testing")


class ConfigError(Exception):
    """An invalid setting; the message is one line naming it."""


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("must be 0 or a positive integer")
    return number


def _even_positive_int(value: Any) -> int:
    number = _int(value)
    if number < 2 or number % 2:
        raise ValueError("must be an even number, at least 2")
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError("must be an integer")


def _int_between(low: int, high: int, unit: str) -> Callable[[Any], int]:
    """A parser for an integer in [low, high]."""
    def parse(value: Any) -> int:
        number = _int(value)
        if not low <= number <= high:
            raise ValueError(f"must be an integer number of {unit} between {low} and {high}")
        return number
    return parse


def _number(low: float, high: float, unit: str, low_open: bool = False) -> Callable[[Any], float]:
    """A parser for a number in [low, high] (or (low, high] when low_open)."""
    message = f"must be a number of {unit} between {low:g} and {high:g}" if unit else \
        f"must be a number between {low:g} and {high:g}"

    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(message) from None
        if not (low < number if low_open else low <= number) or not number <= high:
            raise ValueError(message)
        return number
    return parse


_fraction = _number(0, 1, "", low_open=True)
_seconds = _number(0, 3600, "seconds")
_milliseconds = _number(0, 1000, "milliseconds")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip()


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text
    return parse


def _name_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(item.strip() for item in items if str(item).strip())
    for name in names:
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid model name")
    return names


def _field_list(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def _model_name_or_empty(value: Any) -> str:
    text = _text(value)
    if text and not MODEL_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid model name")
    return text


def _algorithms(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    algorithms = tuple(item.strip() for item in items if str(item).strip())
    allowed = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
    if not algorithms or any(a not in allowed for a in algorithms):
        raise ValueError(f"must be a comma-separated list of {', '.join(allowed)}")
    return algorithms


def _bind(value: Any) -> str:
    text = _text(value)
    if text.startswith("unix:"):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT or unix:PATH")
    return text


def _otlp_endpoint(value: Any) -> str:
    text = _text(value)
    if text and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError("must be an http:// or https:// URL (an OTLP/HTTP collector), or empty")
    return text


RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.count} per {self.seconds:g} s"


def _rate_limit(value: Any) -> "Limit | None":
    """'100/minute', '10/second', '5000/hour', '20/30s'; empty means no limit."""
    text = str(value).strip().lower()
    if not text:
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(?:(second|minute|hour|day)|(\d+(?:\.\d+)?)\s*s)", text)
    if not match or int(match.group(1)) < 1:
        raise ValueError("must be COUNT/second|minute|hour|day or COUNT/SECONDSs, e.g. 100/minute")
    seconds = RATE_UNITS[match.group(2)] if match.group(2) else float(match.group(3))
    if seconds <= 0:
        raise ValueError("the window must be longer than 0 seconds")
    return Limit(int(match.group(1)), seconds)


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_WORKERS = 2  # each worker holds a copy of every model: more is a memory decision, made explicitly


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    env: str = ""

    @property
    def env_name(self) -> str:
        return self.env or f"AGSERVE_{self.name}"


SETTINGS: tuple[Setting, ...] = (
    # The application
    Setting("ENV", "development", _choice(*ENVIRONMENTS), "`development`, `production` or `testing`: which `config/<env>.py` is layered over the defaults (production binds `0.0.0.0:8000` and logs predictions to var/predictions)."),
    Setting("MODEL_REPOSITORY", "models", _text, "Folder of the model repository (`<name>/<version>/`); relative paths are from the working directory."),
    Setting("MODELS", (), _name_list, "Comma-separated model names to serve; empty serves every model that has an active version."),
    Setting("DEFAULT_MODEL", "", _model_name_or_empty, "Model answered by `POST /predict`, `GET /model/info` and `GET /health`; empty: the one model `AGSERVE_MODELS` names, else the repository's default (its first model, or as set by `agserve models default NAME`)."),
    Setting("MAX_ROWS", 10_000, _positive_int, "Most rows in one prediction request (more: 413)."),
    Setting("MAX_BODY_BYTES", 32 * 1024 * 1024, _positive_int, "Largest request body in bytes (more: 413)."),
    Setting("MAX_COLUMNS", 1024, _positive_int, "Most columns (CSV header, split columns, V2 inputs, keys of a row) in one request, or the model's feature count if larger (more: 413, checked before any row is read)."),
    Setting("MAX_CATEGORY_LENGTH", 1024, _positive_int, "Longest value, in characters, of a category feature (longer: 422)."),
    Setting("MAX_TEXT_LENGTH", 65_536, _positive_int, "Longest value, in characters, of a free-text feature (longer: 422)."),
    Setting("UNKNOWN_FIELDS", "raise", _choice("raise", "exclude"), "What to do with a row key that is not a feature: `raise` (422) or `exclude` (drop it)."),
    Setting("MISSING_FEATURES", "raise", _choice("raise", "null"), "What to do with a feature missing from a row: `raise` (422) or `null` (treat as a missing value)."),
    Setting("BATCHING", True, _boolean, "Gather concurrent requests for one model into one model call, in each worker."),
    Setting("BATCH_MAX_ROWS", 512, _positive_int, "Most rows in one batched model call (a larger request runs alone)."),
    Setting("BATCH_MAX_WAIT_MS", 2.0, _milliseconds, "Longest a batch waits for requests that are still being validated; a lone request never waits."),
    Setting("EXPLAIN_MAX_ROWS", 20, _positive_int, "Most rows in one explanation request (more: 413); each row costs about permutations × features × 50 rows of prediction."),
    Setting("EXPLAIN_CONCURRENCY", 2, _positive_int, "Explanation requests each worker computes at once; more are refused with 503 and Retry-After, so explanations never crowd out predictions."),
    Setting("EXPLAIN_CHUNK_ROWS", 512, _positive_int, "Masked rows of an explanation per model call (at most `AGSERVE_BATCH_MAX_ROWS`): a prediction arriving meanwhile waits for at most one such call."),
    Setting("EXPLAIN_SHARE", 0.1, _fraction, "While predictions keep coming, explanations pause between their model calls so that they take at most this share of a worker's model time (1: no pause; predictions queued always go first)."),
    Setting("EXPLAIN_PERMUTATIONS", 10, _even_positive_int, "Feature orderings sampled per explained row (antithetic pairs, so even); more is smoother and slower, the sum is exact either way."),
    Setting("PERSIST_MAX_MEMORY", 0.4, _fraction, "Share of available memory a model may take when it is persisted in RAM (AutoGluon's `max_memory`)."),
    Setting("MATH_THREADS", 0, _non_negative_int, "OpenMP/BLAS threads per worker; 0 means usable cores (the affinity mask, lowered to the cgroup CPU quota) ÷ workers (at least 1)."),
    Setting("RELOAD_INTERVAL", 2.0, _seconds, "Seconds between each worker's checks for a newly promoted or rolled-back version (0: never; restart to change versions)."),
    Setting("LOAD_MODELS_ON_START", True, _boolean, "Load and warm up the served models when the app is created (off for CLI commands)."),
    # The database: what must survive (API keys, revocations, the audit log, model activation, monitoring)
    Setting("DATABASE_URL", "", _text, "PostgreSQL for a fleet of replicas (`postgresql://user:password@host:5432/agserve`); empty: the embedded SQLite file `AUTH_DB` (one machine)."),
    Setting("AUTH_DB", "var/agserve.sqlite3", _text, "The embedded SQLite database (API keys, hashed; the audit log; model activation and the default model; monitoring) when `DATABASE_URL` is empty; shared by this machine's workers."),
    Setting("DATABASE_TIMEOUT", 5.0, _number(0.1, 60, "seconds"), "Timeout of every database statement, connection and pool wait; past it the request gets 503."),
    Setting("REPLICA_NAME", "", _text, "This replica's name in `GET /admin/models/<name>/versions`; empty: the host name (the pod's name in Kubernetes)."),
    # Authentication
    Setting("KEY_PEPPER", "", _text, "Server secret mixed into API-key hashes (HMAC-SHA256); empty uses plain SHA-256 (refused in production, as are placeholders and low-entropy values). Changing it invalidates every key."),
    Setting("KEY_CACHE_SECONDS", 0.5, _number(0, 1, "seconds"), "How long a worker trusts a key it verified against the database before asking again: a revocation reaches every replica within this time."),
    Setting("KEY_GRACE_SECONDS", 300, _non_negative_int, "While the database is unreachable, keys this worker verified within this many seconds keep working; other keys get 503."),
    Setting("JWT_ALGORITHMS", ("HS256",), _algorithms, "JWT algorithms accepted (the token's own `alg` is never trusted beyond this list and its key's algorithm)."),
    Setting("JWT_SECRET", "", _text, "HS256 secret (at least 32 bytes; in production not a placeholder and not low-entropy) for tokens without a `kid`; also lets the server issue tokens."),
    Setting("JWT_JWKS_FILE", "", _text, "JSON Web Key Set of verification keys, each with `kid` and `alg` (public keys for RS/ES: the server cannot mint those)."),
    Setting("JWT_AUDIENCE", "agserve", _text, "Required `aud` claim."),
    Setting("JWT_ISSUER", "agserve", _text, "Required `iss` claim."),
    Setting("JWT_LEEWAY", 30, _int_between(0, 300, "seconds"), "Seconds of clock skew allowed on `exp`, `nbf` and `iat` (at most 300)."),
    Setting("JWT_MAX_TTL", 3600, _int_between(60, 86400, "seconds"), "Longest lifetime, in seconds, of a token issued by the server (60 to 86400)."),
    Setting("KEYS_MAY_OUTLIVE_TOKEN", False, _boolean, "Whether a caller authenticated by a JWT may create an API key that expires after its token (or never); off: 422."),
    Setting("TRUSTED_PROXIES", 0, _int_between(0, 5, "proxies"), "Proxies in front of the server whose `X-Forwarded-For`/`-Proto` are trusted (Werkzeug's ProxyFix); the audit log and request logs then record the real client. 1 behind the compose nginx; 0: the peer address."),
    Setting("HEADER_TIMEOUT", 10.0, _number(0.5, 300, "seconds"), "Seconds a client has to send a request's headers; until they are complete the connection holds no worker thread (slow clients cannot take them all)."),
    Setting("BODY_TIMEOUT", 10.0, _number(0.5, 300, "seconds"), "Seconds a request body has from the end of its headers; the first 64 KiB of it are gathered without holding a worker thread. Past them the body must keep up AGSERVE_BODY_MIN_RATE, or it is answered 408."),
    Setting("BODY_MIN_RATE", 262144, _int_between(1024, 1 << 30, "bytes/s"), "Average bytes/s a request body must keep up since its headers once AGSERVE_BODY_TIMEOUT has passed, or it is answered 408: a slow body holds a thread at most max(BODY_TIMEOUT, MAX_BODY_BYTES / BODY_MIN_RATE) seconds."),
    Setting("RATE_LIMIT_PREDICT", "", _rate_limit, "Requests each credential (API key or JWT subject) may make to `predict` routes, e.g. `600/minute`; empty: no limit."),
    Setting("RATE_LIMIT_EXPLAIN", "", _rate_limit, "The same for `explain` routes."),
    Setting("RATE_LIMIT_MODEL_INFO", "", _rate_limit, "The same for `model_info` routes."),
    Setting("RATE_LIMIT_ADMIN", "", _rate_limit, "The same for `admin` routes."),
    Setting("RATE_LIMIT_METRICS", "", _rate_limit, "The same for `/metrics`."),
    # Shared state
    Setting("REDIS_URL", "", _text, "Redis for the prediction cache and rate limits shared by every replica (`redis://:password@host:6379/0`, or `rediss://` for TLS); never trusted with API keys. Empty: a per-worker cache and per-machine limits."),
    Setting("REDIS_TIMEOUT", 0.1, _number(0.001, 10, "seconds"), "Timeout of every Redis call; a failed Redis is left alone for a second, then tried again."),
    Setting("CACHE", True, _boolean, "Cache predictions per row (the model, its version and activation, and the row's validated values)."),
    Setting("CACHE_SECRET", "", _text, "Secret that signs every answer cached in Redis (HMAC-SHA256), so whoever can write to Redis cannot plant one; the same on every replica. Empty: a random secret per worker, so no worker trusts another's entries. In production a placeholder or low-entropy value is refused."),
    Setting("CACHE_TTL_SECONDS", 300, _positive_int, "How long a cached row's answer is kept."),
    Setting("CACHE_MAX_ROWS", 100_000, _positive_int, "Rows each worker's embedded cache holds (least recently used go first); with Redis, bound its memory with maxmemory."),
    Setting("CACHE_MAX_REQUEST_ROWS", 100, _positive_int, "Requests with more rows skip the cache (bulk scoring rarely repeats, and hashing 10,000 rows costs more than it saves)."),
    Setting("DEBUG", False, _boolean, "Flask debug mode; refused in production."),
    Setting("PREDICTION_LOG_DIR", "", _text, "Folder of the prediction log (JSON lines per worker, for retraining and audit); empty: off. Production sets var/predictions."),
    Setting("PREDICTION_LOG_SAMPLE", 1.0, _fraction, "Share of requests whose rows are logged."),
    Setting("PREDICTION_LOG_DROP", (), _field_list, "Comma-separated input fields never written to the prediction log (privacy)."),
    Setting("PREDICTION_LOG_MAX_MB", 64, _positive_int, "Size at which a worker starts a new prediction-log file."),
    Setting("PREDICTION_LOG_ROTATE_SECONDS", 3600, _positive_int, "Age at which a worker starts a new prediction-log file."),
    Setting("PREDICTION_LOG_MAX_TOTAL_MB", 4096, _positive_int, "Total size of the prediction-log folder past which the oldest files are deleted (checked at each rotation)."),
    Setting("PREDICTION_LOG_RETENTION_DAYS", 90, _positive_int, "Age past which prediction-log files are deleted (checked at each rotation)."),
    Setting("ON_RECORD_FAILURE", "continue", _choice("continue", "refuse"), "When the prediction log or the monitoring store cannot be written (disk full, I/O error): `continue` answers and counts the lost record in `agserve_records_lost_total`; `refuse` answers 503 (audit-critical deployments)."),
    # Monitoring: drift, live quality, alerts
    Setting("MONITORING", True, _boolean, "Record traffic, input drift and answered predictions (for feedback) in the monitoring tables of the database (shared by every worker of every replica)."),
    Setting("MONITOR_DB", "", _text, "One machine only: a SQLite file of its own for the monitoring tables (say, on another disk than `AUTH_DB`); empty: the database. Refused with `DATABASE_URL` set, where every replica must share them."),
    Setting("MONITOR_FLUSH_SECONDS", 1.0, _number(0.05, 60, "seconds"), "How often each worker writes what it noted to the monitoring tables (feedback can join an answer once it is written)."),
    Setting("DRIFT_WINDOW_SECONDS", 3600, _positive_int, "Sliding window of recent inputs that drift is measured over (all workers together)."),
    Setting("DRIFT_MIN_ROWS", 100, _positive_int, "Rows a feature needs in the window before it can be flagged as drifted."),
    Setting("DRIFT_PSI_THRESHOLD", 0.2, _number(0, 100, "", low_open=True), "Population stability index above which a feature is flagged."),
    Setting("DRIFT_SHARE_THRESHOLD", 0.1, _fraction, "Share of unseen categories, out-of-range numbers, or change in missing values above which a feature is flagged."),
    Setting("QUALITY_WINDOW_SECONDS", 86400, _positive_int, "Window of feedback (by arrival) that the live metric is computed over."),
    Setting("FEEDBACK_RETENTION_HOURS", 168, _positive_int, "How long answered predictions are kept for feedback to join."),
    Setting("ALERT_RULES", "", _text, "TOML file of alert rules and channels (see config/alerts.example.toml); empty: no alerts."),
    Setting("ALERT_INTERVAL", 30.0, _number(0.1, 3600, "seconds"), "Seconds between evaluations of the alert rules (by one worker of the whole fleet; another takes over within about this time when it dies)."),
    Setting("METRICS_DIR", "", _text, "Folder of prometheus_client's multiprocess files; empty: gunicorn.conf.py makes a fresh one under /dev/shm per server (and without gunicorn, metrics stay in the process)."),
    Setting("OTLP_ENDPOINT", "", _otlp_endpoint, "OpenTelemetry collector that receives traces over OTLP/HTTP (protobuf), e.g. `http://otel-collector:4318` (spans go to its `/v1/traces`); empty: tracing is off and costs nothing. Each worker exports its own spans in the background; the `OTEL_EXPORTER_OTLP_*` and `OTEL_BSP_*` variables of the OpenTelemetry SDK (headers, timeout, export delay) apply ([tracing](tracing.md))."),
    Setting("OTEL_SERVICE_NAME", "agserve", _text, "The `service.name` that spans carry, to tell this deployment's traces from others' in the collector."),
    Setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "Log level of the JSON logs."),
    # The gunicorn server (read by gunicorn.conf.py)
    Setting("BIND", "127.0.0.1:8000", _bind, "Address gunicorn listens on."),
    Setting("WORKERS", 0, _non_negative_int, "Gunicorn worker processes (each loads every served model); 0: one per usable core, at most 2 (the cgroup CPU quota counts).", env="WEB_CONCURRENCY"),
    Setting("THREADS", 32, _positive_int, "Request threads per worker (gthread); with batching they mostly wait, so more threads mean larger batches."),
    Setting("PIN_WORKERS", "auto", _choice("auto", "on", "off"), "Keep each worker on CPUs of its own: `on`, `off`, or `auto`: only when the server may use no more CPUs than it has workers (a machine or a cpuset sized for it; never when the affinity mask shows a whole node's cores). A worker runs Python on one core at a time (the GIL); kept on one core, its threads hand the GIL over there, with its caches warm (`make bench-knobs`)."),
    Setting("TIMEOUT", 60, _positive_int, "Seconds a worker may be silent before the master restarts it; keep above the slowest allowed request and model load."),
    Setting("GRACEFUL_TIMEOUT", 30, _positive_int, "Seconds workers get to finish their requests on restart or shutdown."),
    Setting("MAX_REQUESTS", 100_000, _non_negative_int, "Requests after which a worker is recycled (0: never); each recycle is a model load, so rare enough to cost under 1 % of throughput at 1,000 req/s a worker (BENCHMARKS.md)."),
    Setting("MAX_REQUESTS_JITTER", 10_000, _non_negative_int, "Random extra requests added to MAX_REQUESTS so workers do not recycle together."),
    Setting("MAX_CONNECTION_AGE", 5.0, _number(0, 3600, "seconds"), "Seconds after which a kept-alive connection's next answer closes it (±10 %; 0: never), as gRPC's `max_connection_age`: a connection stays with the worker (and replica) that accepted it, so without this the clients of a restarted worker, or of a fleet before it scaled out, stay where they went."),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve every setting through the four layers; raise ConfigError naming the first bad one."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    raw: dict[str, tuple[Any, str]] = {s.name: (s.default, f"default {s.name}") for s in SETTINGS}

    env_name = overrides.get("ENV", environ.get("AGSERVE_ENV", "development"))
    env_name = _parse(_BY_NAME["ENV"], env_name, "AGSERVE_ENV")
    config_file = CONFIG_DIR / f"{env_name}.py"
    if config_file.is_file():
        for key, value in runpy.run_path(str(config_file)).items():
            if key.isupper():
                if key not in _BY_NAME:
                    raise ConfigError(f"{config_file.name}: {key} is not a setting")
                raw[key] = (value, f"{key} in config/{config_file.name}")
    for setting in SETTINGS:
        if setting.env_name in environ:
            raw[setting.name] = (environ[setting.env_name], setting.env_name)
    for key, value in overrides.items():
        if key in _BY_NAME:
            raw[key] = (value, key)
    raw["ENV"] = (env_name, "AGSERVE_ENV")

    settings = {name: _parse(_BY_NAME[name], value, source) for name, (value, source) in raw.items()}
    if settings["MONITOR_DB"] and settings["DATABASE_URL"]:  # a file per machine would split the fleet's monitoring
        raise ConfigError("AGSERVE_MONITOR_DB is for one machine: with AGSERVE_DATABASE_URL set, monitoring lives in "
                          "that database, shared by every replica (unset AGSERVE_MONITOR_DB)")
    return settings


def _parse(setting: Setting, value: Any, source: str) -> Any:
    try:
        return setting.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{source} {exc} (got {value!r})") from None


def cpu_count() -> int:
    """Cores this process may use: the affinity mask, lowered to the cgroup CPU quota (a container's limit)."""
    from app.threads import allowed_cpus, cgroup_cpu_limit

    cores = len(allowed_cpus())
    quota = cgroup_cpu_limit()
    return max(1, min(cores, int(quota))) if quota is not None else cores


def worker_count(settings: Mapping[str, Any]) -> int:
    """Gunicorn workers: WEB_CONCURRENCY, or one per usable core up to DEFAULT_WORKERS (each holds every model)."""
    return settings["WORKERS"] or min(DEFAULT_WORKERS, cpu_count())


def math_threads(settings: Mapping[str, Any]) -> int:
    """Threads each worker's math libraries get, so that workers × threads ≤ cores."""
    return settings["MATH_THREADS"] or max(1, cpu_count() // worker_count(settings))


CONFIGURATION_PAGE_HEADER = """# Configuration

<!-- Generated from the settings table in app/config.py by `make docs`; tests/test_config.py fails when it is stale.
Edit the table, not this page. -->

Settings are layered: defaults in `app/config.py` → `config/<AGSERVE_ENV>.py` → environment variables → (in tests)
a mapping passed to `create_app`. `AGSERVE_ENV` is `development` (the default), `production` or `testing`;
`config/production.py` binds `0.0.0.0:8000` (every interface: behind a load balancer or in a container) and logs
predictions to `var/predictions`, so set `AGSERVE_BIND=127.0.0.1:8000` to keep a production server on loopback
(`make deploy` does unless you set it). An invalid setting stops start-up with one line naming it, e.g.
`agserve: configuration error: AGSERVE_MAX_ROWS must be a positive integer (got '-5')`.

| Variable | Default | What it does |
|---|---|---|
"""


def configuration_page() -> str:
    """docs/configuration.md: every setting's variable, default and meaning, from SETTINGS."""
    rows = [f"| `{s.env_name}` | {_shown_default(s.default)} | {s.help} |" for s in SETTINGS]
    return CONFIGURATION_PAGE_HEADER + "\n".join(rows) + "\n"


def _shown_default(value: Any) -> str:
    if value in ("", ()):
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"
