"""Building apps for tests: the tiny problem types, an app with its own key database, a client holding a key."""
from __future__ import annotations

from pathlib import Path

from app.values import SCOPES

PROBLEMS = {
    # name: (label, problem_type, hyperparameters) — tiny models that train in about a second
    "binary": ("y_binary", "binary", {"GBM": {"num_boost_round": 30}}),
    "multiclass": ("y_multiclass", "multiclass", {"GBM": {"num_boost_round": 30}, "RF": {"n_estimators": 20}}),
    "regression": ("y_regression", "regression", {"GBM": {"num_boost_round": 30}}),
    "quantile": ("y_regression", "quantile", {"GBM": {"num_boost_round": 30}}),
}
ALL_SCOPES = SCOPES


def build_app(auth_db: Path, **overrides):
    """An app for tests: testing settings, its own key database, then the test's overrides."""
    from app import create_app

    return create_app({"ENV": "testing", "AUTH_DB": str(auth_db), **overrides})


def client_with_key(app, scopes=ALL_SCOPES):
    """A test client that sends a fresh API key with the given scopes on every request."""
    key, _ = app.extensions["agserve.keys"].create("tests", scopes)
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = key
    return client
