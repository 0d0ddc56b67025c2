"""JSON logs: one object per line, each carrying the request id (the access line is written by app.api.hooks)."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from flask import Flask, g, has_request_context
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; extra= fields become keys, tracebacks stay in the log."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if has_request_context() and "context" in g:
            entry["request_id"] = g.context.request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of the record (it may be redirected later)."""

    agserve = True

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(app: Flask) -> None:
    """JSON lines on stdout for the agserve loggers."""
    logger = logging.getLogger("agserve")
    logger.setLevel(app.config["LOG_LEVEL"].upper())
    if not any(getattr(h, "agserve", False) for h in logger.handlers):
        handler = StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
