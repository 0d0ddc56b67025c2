"""Settings: four layers, every one validated, an invalid one stops start-up with one line naming it."""
from __future__ import annotations

import re
import subprocess

import pytest

from app.config import SETTINGS, ConfigError, load_settings, math_threads
from tests.support.servers import BIN, ROOT, free_port, server_env


def test_layers_apply_in_order():
    defaults = load_settings(environ={})
    assert defaults["ENV"] == "development" and defaults["MAX_ROWS"] == 10_000

    testing = load_settings(environ={"AGSERVE_ENV": "testing"})
    assert testing["LOG_LEVEL"] == "warning"  # from config/testing.py

    environment = load_settings(environ={"AGSERVE_ENV": "testing", "AGSERVE_LOG_LEVEL": "error",
                                         "AGSERVE_MAX_ROWS": "50", "WEB_CONCURRENCY": "3"})
    assert (environment["LOG_LEVEL"], environment["MAX_ROWS"], environment["WORKERS"]) == ("error", 50, 3)

    mapping = load_settings(environ={"AGSERVE_MAX_ROWS": "50"}, overrides={"MAX_ROWS": 7, "MODELS": "a,b"})
    assert mapping["MAX_ROWS"] == 7 and mapping["MODELS"] == ("a", "b")


def test_production_listens_beyond_loopback():
    assert load_settings(environ={"AGSERVE_ENV": "production"})["BIND"] == "0.0.0.0:8000"


@pytest.mark.parametrize("variable, value, says", [
    ("AGSERVE_MAX_ROWS", "many", "must be an integer"),
    ("AGSERVE_MAX_ROWS", "0", "must be a positive integer"),
    ("AGSERVE_ENV", "staging", "must be one of development, production, testing"),
    ("AGSERVE_UNKNOWN_FIELDS", "ignore", "must be one of raise, exclude"),
    ("AGSERVE_PERSIST_MAX_MEMORY", "2", "between 0 and 1"),
    ("AGSERVE_BIND", "localhost", "HOST:PORT"),
    ("AGSERVE_MODELS", "ok,../bad", "not a valid model name"),
    ("WEB_CONCURRENCY", "-2", "positive integer"),
    ("AGSERVE_LOAD_MODELS_ON_START", "maybe", "true or false"),
    ("AGSERVE_PIN_WORKERS", "always", "must be one of auto, on, off"),
    ("AGSERVE_MAX_CONNECTION_AGE", "nan", "between 0 and 3600"),
    ("AGSERVE_OTLP_ENDPOINT", "otel-collector:4318", "http:// or https:// URL"),
])
def test_invalid_setting_names_itself(variable, value, says):
    with pytest.raises(ConfigError) as error:
        load_settings(environ={variable: value})
    message = str(error.value)
    assert message.startswith(variable) and says in message and "\n" not in message


def test_math_threads_never_oversubscribe():
    settings = load_settings(environ={"WEB_CONCURRENCY": "2"})
    assert math_threads(settings) * 2 <= max(2, len(__import__("os").sched_getaffinity(0)))
    assert math_threads(load_settings(environ={"WEB_CONCURRENCY": "64"})) == 1
    assert math_threads(load_settings(environ={"AGSERVE_MATH_THREADS": "3"})) == 3


def test_gunicorn_refuses_to_start_with_one_clear_line(tmp_path):
    env = server_env(AGSERVE_MAX_ROWS="-5", AGSERVE_BIND=f"127.0.0.1:{free_port()}",
                     AGSERVE_MODEL_REPOSITORY=str(tmp_path))
    result = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "agserve: configuration error: AGSERVE_MAX_ROWS must be a positive integer (got '-5')"]


def test_cli_refuses_to_start_with_one_clear_line():
    env = server_env(AGSERVE_UNKNOWN_FIELDS="sometimes")
    result = subprocess.run([str(BIN / "agserve"), "models", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "agserve: configuration error: AGSERVE_UNKNOWN_FIELDS must be one of raise, exclude (got 'sometimes')"]


def test_the_configuration_page_lists_every_setting_and_is_not_stale():
    """docs/configuration.md is generated from SETTINGS (`make docs`): a setting added, removed or reworded without
    regenerating it fails here."""
    from app.config import configuration_page

    page = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", page, flags=re.MULTILINE))
    assert documented == {setting.env_name for setting in SETTINGS}
    assert page == configuration_page(), "docs/configuration.md is stale: run `make docs`"


def test_a_monitoring_file_of_its_own_is_refused_in_a_fleet():
    """AGSERVE_MONITOR_DB would give each replica its own monitoring: refused with a database URL, in one line."""
    with pytest.raises(ConfigError, match="AGSERVE_MONITOR_DB is for one machine") as refused:
        load_settings({"AGSERVE_DATABASE_URL": "postgresql://agserve@db/agserve", "AGSERVE_MONITOR_DB": "var/m.db"})
    assert "\n" not in str(refused.value)
    assert load_settings({"AGSERVE_MONITOR_DB": "var/m.db"})["MONITOR_DB"] == "var/m.db"  # one machine: allowed
