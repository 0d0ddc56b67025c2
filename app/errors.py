"""One JSON error shape for every failure: {"error", "details", "request_id"}; never a stack trace."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from app.db import DatabaseUnavailable
from app.inference.errors import ModelNotReady, ServingError

log = logging.getLogger("agserve.errors")


class ApiError(ServingError):
    """An HTTP-level refusal raised by views and codecs (bad body, wrong content type, too many rows)."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message, details, headers)
        self.status = status


def error_response(status: int, message: str, details: dict[str, Any] | None = None):
    context = g.get("context")
    body = {"error": message, "details": details or {}, "request_id": context.request_id if context else None}
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServingError, refusal)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)


def refusal(exc: ServingError, status: int | None = None):
    """The house shape for any ServingError; a protocol may answer with its own status (V2 knows only a few)."""
    log.info("request refused: %s", exc.message, extra={"status": exc.status})
    response, status = error_response(status or exc.status, exc.message, visible_details(exc))
    response.headers.update(exc.headers)
    return response, status


def visible_details(exc: ServingError) -> dict[str, Any]:
    """A load error can name files and what failed: in production only callers with the model_info scope read it."""
    from app.auth import may_see
    if isinstance(exc, ModelNotReady) and "reason" in exc.details and not may_see("model_info"):
        return {key: value for key, value in exc.details.items() if key != "reason"}
    return exc.details


def _database_unavailable(exc: DatabaseUnavailable):
    # Loud and retryable: nothing was granted, and nothing the caller asked to change was half-done.
    log.error("database unavailable: %s", exc, extra={"status": 503})
    response, status = error_response(503, "the database is unavailable; retry shortly")
    response.headers["Retry-After"] = "1"
    return response, status


def _http_error(exc: HTTPException):
    status = exc.code or 500
    message = {413: "request body too large"}.get(status, exc.description or exc.name)
    response, status = error_response(status, message)
    if exc.code == 405 and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response, status


def _unexpected_error(exc: Exception):
    # The traceback goes to the log, keyed by request id; the client only gets the id.
    log.exception("unexpected error")
    return error_response(500, "internal server error; quote the request id when reporting it")
