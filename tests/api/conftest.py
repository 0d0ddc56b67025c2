"""Fixtures shared by the API tests."""
from __future__ import annotations

import pytest

from tests.support.apps import build_app, client_with_key
from tests.support.data import FEATURES, to_records


@pytest.fixture(scope="module")
def good_row(dataset):
    _, test = dataset
    return to_records(test[FEATURES].dropna().head(1))[0]


@pytest.fixture(scope="module")
def small_limits(repository_path, tmp_path_factory):
    app = build_app(tmp_path_factory.mktemp("auth") / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path),
                    MODELS="binary", MAX_ROWS=5, MAX_BODY_BYTES=4096)
    return client_with_key(app)


