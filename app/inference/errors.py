"""Errors of the model layer; each carries the HTTP status the API answers with."""
from __future__ import annotations

from typing import Any


class ModelError(Exception):
    """Base class: a message for the client and optional structured details."""

    status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


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
