"""The one root of every error a client is told about, and the model layer's errors. No Flask here: the HTTP layer
maps `status` to the response (app/errors.py), and the CLI prints `message`."""
from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """A refusal or failure with a message for the client, structured details, and the HTTP status it maps to."""

    status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ModelError(ServingError):
    """Errors of the model layer (repository, loading, validation, predicting)."""


class ModelNotFound(ModelError):
    status = 404


class ModelNotReady(ModelError):
    status = 503


class InvalidInput(ModelError):
    status = 422


class RepositoryError(ModelError):
    """A bad import or a malformed repository entry (CLI and load time)."""

    status = 400


class ModelLoadError(ModelError):
    """A version that must not be loaded: changed files, other AutoGluon or Python, bad bounds."""

    status = 503
