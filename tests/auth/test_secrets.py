"""Production refuses placeholder and guessable secrets, read from this repository's own templates, and a missing
pepper; a token cannot mint a key that outlives it; JWT leeway and lifetime are bounded."""
from __future__ import annotations

import re
import runpy
import secrets
import time

import pytest
import yaml

from app.db import sqlite_file
from app.auth import check_startup
from app.auth.keys import KeyStore
from app.config import ConfigError, load_settings
from tests.support.tokens import hs_token
from tests.support.servers import ROOT

SECRET_NAME = re.compile(r"SECRET|PEPPER|PASSWORD|TOKEN", re.IGNORECASE)


def template_placeholders() -> set[str]:
    """Every secret value the repository's templates ship: the k8s Secret, compose's environment, config/*.py and
    the README's examples."""
    found = set()
    for document in yaml.safe_load_all((ROOT / "deploy/k8s/examples/secret.yaml").read_text()):
        found |= {str(v) for v in {**document.get("stringData", {}), **document.get("data", {})}.values()}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        found |= {str(v) for k, v in environment.items() if SECRET_NAME.search(k) and v}
    for path in (ROOT / "config").glob("*.py"):
        found |= {v for k, v in runpy.run_path(str(path)).items() if SECRET_NAME.search(k) and isinstance(v, str)}
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        found |= set(re.findall(r"AGSERVE_(?:JWT_SECRET|KEY_PEPPER)\s*[=:]\s*[\"']?([^\s\"'`]+)", path.read_text()))
    return {value for value in found if value and not value.startswith("$")}  # "$VAR" is a reference, not a value


PLACEHOLDERS = sorted(template_placeholders())
GOOD = secrets.token_urlsafe(32)


def production(tmp_path, **settings):
    KeyStore(sqlite_file(tmp_path / "auth.db"), settings.get("KEY_PEPPER", GOOD)).create("ops", ["admin"])
    return load_settings({}, {"ENV": "production", "AUTH_DB": str(tmp_path / "auth.db"), "KEY_PEPPER": GOOD,
                              **settings})


def test_the_templates_ship_placeholders_and_the_search_finds_them():
    assert {"replace-with-a-long-random-string", "replace-with-at-least-32-random-bytes-of-secret"} <= set(PLACEHOLDERS)


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("name", ["KEY_PEPPER", "JWT_SECRET", "CACHE_SECRET"])
def test_production_refuses_every_template_placeholder(tmp_path, name, placeholder):
    with pytest.raises(ConfigError) as refused:
        check_startup(production(tmp_path, **{name: placeholder}))
    assert str(refused.value).startswith(f"AGSERVE_{name} ") and placeholder not in str(refused.value)


@pytest.mark.parametrize("weak", ["a" * 64, "ab" * 32, "0123456789" * 4, "Tr0ub4dor&3" * 3,
                                  "s" * 40])
@pytest.mark.parametrize("name", ["KEY_PEPPER", "JWT_SECRET", "CACHE_SECRET"])
def test_production_refuses_low_entropy_secrets(tmp_path, name, weak):
    with pytest.raises(ConfigError, match=f"^AGSERVE_{name} has too little entropy"):
        check_startup(production(tmp_path, **{name: weak}))


def test_production_needs_a_pepper_and_accepts_real_secrets(tmp_path):
    with pytest.raises(ConfigError, match="^production needs AGSERVE_KEY_PEPPER"):
        check_startup(production(tmp_path, KEY_PEPPER=""))
    check_startup(production(tmp_path, JWT_SECRET=secrets.token_urlsafe(32)))
    check_startup(production(tmp_path, KEY_PEPPER=secrets.token_hex(32), JWT_SECRET=secrets.token_hex(32)))
    # Development and testing keep working with anything (the suite's own secrets are not random).
    check_startup(load_settings({}, {"ENV": "development", "JWT_SECRET": "s" * 40, "KEY_PEPPER": "x"}))


@pytest.mark.parametrize("variable, value, says", [
    ("AGSERVE_JWT_LEEWAY", "301", "between 0 and 300"),
    ("AGSERVE_JWT_LEEWAY", "-1", "between 0 and 300"),
    ("AGSERVE_JWT_MAX_TTL", "86401", "between 60 and 86400"),
    ("AGSERVE_JWT_MAX_TTL", "999999999999999999999", "between 60 and 86400"),
])
def test_jwt_leeway_and_lifetime_are_bounded(variable, value, says):
    with pytest.raises(ConfigError, match=f"^{variable} must be an integer number of seconds {says}"):
        load_settings(environ={variable: value})


def test_a_token_cannot_create_a_key_that_outlives_it(auth_app):
    client = auth_app.test_client()
    token = hs_token(exp=int(time.time()) + 600, scope="admin")
    headers = {"Authorization": f"Bearer {token}"}
    for expires_in in ("1h", None):  # longer than the token, or never
        answer = client.post("/admin/keys", json={"owner": "x", "scopes": ["predict"], "expires_in": expires_in},
                             headers=headers)
        assert answer.status_code == 422, answer.get_json()
        assert set(answer.get_json()["details"]) == {"expires_in"}
    assert client.post("/admin/keys", json={"owner": "x", "scopes": ["predict"], "expires_in": "5m"},
                       headers=headers).status_code == 201
    auth_app.config["KEYS_MAY_OUTLIVE_TOKEN"] = True
    try:
        assert client.post("/admin/keys", json={"owner": "x", "scopes": ["predict"], "expires_in": "30d"},
                           headers=headers).status_code == 201
    finally:
        auth_app.config["KEYS_MAY_OUTLIVE_TOKEN"] = False
    admin_key, _ = auth_app.extensions["agserve.keys"].create("ops", ["admin"])  # keys are not bound by this rule
    assert client.post("/admin/keys", json={"owner": "x", "scopes": ["predict"]},
                       headers={"X-API-Key": admin_key}).status_code == 201


def test_the_app_factory_refuses_them_too(tmp_path):
    from app import create_app

    settings = {"ENV": "production", "AUTH_DB": str(tmp_path / "auth.db"), "LOAD_MODELS_ON_START": False,
                "MONITORING": False, "PREDICTION_LOG_DIR": ""}
    with pytest.raises(ConfigError, match="^production needs AGSERVE_KEY_PEPPER"):
        create_app(settings)
    with pytest.raises(ConfigError, match="^AGSERVE_KEY_PEPPER is a placeholder from a template$"):
        create_app({**settings, "KEY_PEPPER": PLACEHOLDERS[-1]})
