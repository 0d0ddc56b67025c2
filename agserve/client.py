"""A Python client for agserve: DataFrames in and out, retries that are safe, errors that carry the server's answer.

    from agserve.client import Client
    client = Client("http://127.0.0.1:8000", key="agk_...")
    answers = client.predict(frame, model="churn")        # a DataFrame: prediction, proba_<class> columns
    answers.attrs["request_ids"], answers.attrs["prediction_ids"]

Needs only pandas and requests. Frames above `csv_rows` rows travel as CSV both ways; frames above the server's row
limit (read from the model's info, or learnt from a 413) are sent in chunks and put back together in order.
Connection errors, 408, 429, 502, 503 and 504 are retried with exponential backoff and jitter, waiting at least the
server's Retry-After; any other 4xx is raised at once, since sending it again would fail again.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd
import requests

log = logging.getLogger("agserve.client")
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
REQUEST_ID_HEADER = "X-Request-ID"


class AgserveError(Exception):
    """The server refused or failed a call: status, its JSON error (error, details, request_id) and the body."""

    def __init__(self, status: int | None, error: str, details: dict[str, Any] | None = None,
                 request_id: str | None = None, body: Any = None):
        super().__init__(f"{status} {error} (request id {request_id})" if status else error)
        self.status, self.error, self.details, self.request_id, self.body = status, error, details or {}, \
            request_id, body


class BadRequest(AgserveError):
    """400: the body is not UTF-8 JSON or CSV."""


class AuthenticationError(AgserveError):
    """401: no credential, or one the server does not accept."""


class PermissionDenied(AgserveError):
    """403: the credential lacks the route's scope."""


class NotFound(AgserveError):
    """404: unknown model, route, or prediction id."""


class Conflict(AgserveError):
    """409: the server refuses the change or the request in its present state."""


class PayloadTooLarge(AgserveError):
    """413: too many rows or columns, or too many bytes, even after chunking."""


class UnsupportedMediaType(AgserveError):
    """415: a content type the route does not take."""


class ValidationError(AgserveError):
    """422: rows or fields break the model's schema; `details` names them (`details["rows"]`: row → field →
    messages, with row indices counted within the chunk at `chunk_start`)."""

    chunk_start: int = 0


class RateLimited(AgserveError):
    """429 that outlasted the client's retries; `retry_after` is the server's last Retry-After."""

    retry_after: float | None = None


class ServerError(AgserveError):
    """5xx that outlasted the client's retries (or a 500, which is not retried: quote its request id)."""


class VersionMismatch(AgserveError):
    """The server answered with another version than the one the caller pinned (it serves the active one)."""


class TransportError(AgserveError):
    """The server could not be reached (connection refused or reset, or a timeout) within the retries."""


ERRORS = {400: BadRequest, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict,
          413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationError, 429: RateLimited}


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange the client made (retries included): what it sent, what came back, and how long it waited
    before the next try (0 when there was none)."""
    method: str
    path: str
    status: int | None  # None: no answer (connection error or timeout)
    request_id: str
    started: float  # time.monotonic() when it was sent
    seconds: float
    retry_after: float | None
    error: str | None


class Client:
    """One agserve server. Use one Client per thread: requests' Session is not guaranteed thread-safe, and
    `last_request_ids` is the last call's."""

    def __init__(self, url: str, key: str | None = None, token: str | None = None, *, timeout: float = 30.0,
                 connect_timeout: float = 5.0, retries: int = 8, backoff: float = 0.25, max_backoff: float = 10.0,
                 max_retry_after: float = 60.0, csv_rows: int = 1000, session: requests.Session | None = None):
        if key and token:
            raise ValueError("give key or token, not both")
        self.url = url.rstrip("/")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.retries, self.backoff, self.max_backoff, self.max_retry_after = retries, backoff, max_backoff, \
            max_retry_after
        self.csv_rows = csv_rows
        self.session = session or requests.Session()
        if key:
            self.session.headers["X-API-Key"] = key
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.history: deque[Attempt] = deque(maxlen=1000)
        self.last_request_ids: list[str] = []
        self._limits: dict[str | None, dict[str, Any]] = {}

    # --- Predictions ---------------------------------------------------------------------------------------
    def predict(self, data: pd.DataFrame | Sequence[dict[str, Any]], model: str | None = None,
                version: str | None = None) -> pd.DataFrame:
        """Predictions for every row, in order: `prediction` and `proba_<class>` columns (quantile models:
        `quantile_<level>`), the input's index kept. `attrs` hold `request_ids`, `prediction_ids` (one per row, for
        feedback), `model` and `version`. `version` pins the version: another answering raises VersionMismatch."""
        frame = data if isinstance(data, pd.DataFrame) else None
        total = len(data)
        if total == 0:
            raise ValueError("predict needs at least one row")
        limits = self._model_limits(model)
        path = f"/models/{model}/predict" if model else "/predict"
        parts, request_ids, prediction_ids, served = [], [], [], None
        for start, stop, answer in self._chunked(path, data, limits, "max_rows"):
            request_id, part, answered = answer
            if version is not None and answered[1] != str(version):
                raise VersionMismatch(None, f"asked for {answered[0]} version {version}, the server answered "
                                      f"with version {answered[1]} (it serves the active version)",
                                      request_id=request_id)
            served = answered
            parts.append(part)
            request_ids.append(request_id)
            prediction_ids += [f"{request_id}:{row}" for row in range(stop - start)]
        result = pd.concat(parts, ignore_index=True)
        if frame is not None:
            result.index = frame.index
        result.attrs.update(request_ids=request_ids, prediction_ids=prediction_ids, model=served[0],
                            version=served[1])
        self.last_request_ids = request_ids
        return result

    def _chunked(self, path: str, data, limits: dict[str, Any], limit_name: str):
        """Yield (start, stop, answer) over chunks of at most the server's row limit, shrinking a chunk the
        server still finds too large (a 413 names its limit, or halving for bytes)."""
        size = limits.get(limit_name) or 10_000
        start = 0
        while start < len(data):
            stop = min(len(data), start + size)
            try:
                yield start, stop, self._predict_chunk(path, data, start, stop, limits)
            except PayloadTooLarge as exc:
                smaller = exc.details.get(limit_name) if limit_name in exc.details else (stop - start) // 2
                if not smaller or smaller >= stop - start:
                    raise
                size = smaller
                continue
            except ValidationError as exc:
                exc.chunk_start = start
                raise
            start = stop

    def _predict_chunk(self, path: str, data, start: int, stop: int, limits: dict[str, Any]):
        """(request_id, answers as a DataFrame, (model, version)) for rows start:stop."""
        if isinstance(data, pd.DataFrame) and stop - start > self.csv_rows:
            body = frame_csv(data.iloc[start:stop])
            if limits.get("max_body_bytes") and len(body) > limits["max_body_bytes"]:
                raise PayloadTooLarge(413, "chunk larger than the server's body limit", {})
            response = self._call("POST", path, data=body,
                                  headers={"Content-Type": "text/csv", "Accept": "text/csv"})
            answers = answers_from_csv(response.text, limits.get("class_labels"))
            return response.headers.get(REQUEST_ID_HEADER), answers, (
                response.headers.get("X-Model-Name"), response.headers.get("X-Model-Version"))
        rows = frame_records(data.iloc[start:stop]) if isinstance(data, pd.DataFrame) else list(data[start:stop])
        body = json.dumps({"data": rows}).encode()
        if limits.get("max_body_bytes") and len(body) > limits["max_body_bytes"]:
            raise PayloadTooLarge(413, "chunk larger than the server's body limit", {})
        response = self._call("POST", path, data=body, headers={"Content-Type": "application/json"})
        answer = response.json()
        info = answer["model_info"]
        return answer["request_id"], answers_from_json(answer["predictions"], answer["probabilities"]), \
            (info["name"], info["version"])

    # --- Explanations, feedback, metadata --------------------------------------------------------------------
    def explain(self, data: pd.DataFrame | Sequence[dict[str, Any]], model: str | None = None, *,
                top: int | None = None, all_classes: bool = False) -> dict[str, Any]:
        """Per row: the prediction, base value and one contribution per input feature (the server's
        `explanations`, chunked by its explanation row limit); `request_ids` lists each chunk's id."""
        limits = self._model_limits(model)
        path = f"/models/{model}/explain" if model else "/explain"
        params = {k: v for k, v in (("top", top), ("classes", "all" if all_classes else None)) if v is not None}
        rows = frame_records(data) if isinstance(data, pd.DataFrame) else list(data)
        size = limits.get("explain_max_rows") or 20
        merged: dict[str, Any] = {"explanations": [], "request_ids": []}
        for start in range(0, len(rows), size):
            answer = self._call("POST", path, json_body={"data": rows[start:start + size]}, params=params).json()
            merged["explanations"] += answer["explanations"]
            merged["request_ids"].append(answer["request_id"])
            merged.update(method=answer["method"], model_info=answer["model_info"])
        self.last_request_ids = merged["request_ids"]
        return merged

    def feedback(self, prediction_ids: str | Sequence[str], actuals: Any) -> int:
        """Outcomes for answered predictions (`attrs["prediction_ids"]` of a predict result, or one id and one
        value); returns how many the server stored. All of one chunk are stored, or none (NotFound,
        ValidationError)."""
        if isinstance(prediction_ids, str):
            prediction_ids, actuals = [prediction_ids], [actuals]
        items = [{"prediction_id": p, "actual": json_value(a)} for p, a in zip(prediction_ids, actuals, strict=True)]
        size = self._model_limits(None).get("max_rows") or 10_000
        accepted, request_ids = 0, []
        for start in range(0, len(items), size):
            answer = self._call("POST", "/feedback", json_body={"feedback": items[start:start + size]}).json()
            accepted += answer["accepted"]
            request_ids.append(answer["request_id"])
        self.last_request_ids = request_ids
        return accepted

    def info(self, model: str | None = None) -> dict[str, Any]:
        """The model's metadata (problem type, label, classes, features, validation scores, the server's limits)."""
        answer = self._call("GET", f"/models/{model}" if model else "/model/info").json()
        self._limits[model] = {**answer.get("limits", {}), "class_labels": answer.get("class_labels")}
        return answer

    def schema(self, model: str | None = None) -> dict[str, Any]:
        """The JSON Schema one input row must satisfy (`row`), with the model's name and version."""
        name = model or self.info()["name"]
        return self._call("GET", f"/models/{name}/schema").json()

    def models(self) -> dict[str, Any]:
        """The served models, their versions and states, and the default."""
        return self._call("GET", "/models").json()

    def _model_limits(self, model: str | None) -> dict[str, Any]:
        """The server's limits for this model, read once; {} when the credential may not read model info (a 413
        then teaches the row limit)."""
        if model not in self._limits:
            try:
                self.info(model)
            except (PermissionDenied, NotFound):
                self._limits[model] = {}
        return self._limits[model]

    # --- One call, with retries ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
              headers: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> requests.Response:
        """The response of the first attempt that succeeds; retryable failures are tried again up to `retries`
        times, with exponential backoff (full jitter) and at least the server's Retry-After."""
        if json_body is not None:
            data, headers = json.dumps(json_body).encode(), {**(headers or {}), "Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            request_id = uuid.uuid4().hex  # a fresh id per attempt: each one the server saw is its own prediction
            started = time.monotonic()
            try:
                response = self.session.request(method, self.url + path, data=data, params=params,
                                                headers={**(headers or {}), REQUEST_ID_HEADER: request_id},
                                                timeout=(self.connect_timeout, self.timeout))
            except (requests.ConnectionError, requests.Timeout) as exc:
                # A read timeout is not retried: the server may still be working on it, and it would pile up.
                retryable = not isinstance(exc, requests.ReadTimeout)
                self._note(method, path, None, request_id, started, None, type(exc).__name__)
                if not retryable or attempt == self.retries:
                    raise TransportError(None, f"{method} {path} failed: {type(exc).__name__}: {exc}",
                                         request_id=request_id) from exc
                self._wait(attempt, None, method, path, type(exc).__name__)
                continue
            request_id = response.headers.get(REQUEST_ID_HEADER) or request_id
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._note(method, path, response.status_code, request_id, started, retry_after, None)
            if response.ok:
                return response
            if response.status_code not in RETRY_STATUSES or attempt == self.retries \
                    or (retry_after or 0) > self.max_retry_after:
                raise error_from(response, request_id, retry_after)
            self._wait(attempt, retry_after, method, path, str(response.status_code))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _note(self, method, path, status, request_id, started, retry_after, error) -> None:
        self.history.append(Attempt(method, path, status, request_id, started, time.monotonic() - started,
                                    retry_after, error))

    def _wait(self, attempt: int, retry_after: float | None, method: str, path: str, why: str) -> None:
        delay = random.uniform(0, min(self.max_backoff, self.backoff * 2 ** attempt))
        delay = max(delay, retry_after or 0)
        log.warning("agserve %s %s: %s, retrying in %.2f s", method, path, why, delay)
        time.sleep(delay)


def error_from(response: requests.Response, request_id: str, retry_after: float | None) -> AgserveError:
    """The typed error for a refused call, carrying the server's JSON error when it sent one (a proxy may not)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        error, details, request_id = body["error"], body.get("details") or {}, body.get("request_id") or request_id
    else:
        error, details = response.reason or "error", {}
    kind = ERRORS.get(response.status_code, ServerError if response.status_code >= 500 else AgserveError)
    exc = kind(response.status_code, error, details, request_id, body)
    if isinstance(exc, RateLimited):
        exc.retry_after = retry_after
    return exc


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (agserve sends seconds; an HTTP date from a proxy counts as one second)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


# --- Wire formats ----------------------------------------------------------------------------------------------
def json_value(value: Any) -> Any:
    """A value as JSON carries it: None for missing, ISO 8601 for moments, plain Python numbers."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if hasattr(value, "isoformat"):  # Timestamp, datetime, date
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    columns = [str(c) for c in frame.columns]
    return [{c: json_value(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False, name=None)]


def frame_csv(frame: pd.DataFrame) -> bytes:
    """The frame as CSV with a header: empty cells for missing values, ISO 8601 moments, floats at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([str(c) for c in frame.columns])
    for row in frame.itertuples(index=False, name=None):
        writer.writerow(["" if v is None else v for v in (json_value(v) for v in row)])
    return buffer.getvalue().encode()


def answers_from_json(predictions: list, probabilities: list | None) -> pd.DataFrame:
    if probabilities is not None:
        classes = list(probabilities[0]) if probabilities else []
        frame = pd.DataFrame({"prediction": predictions})
        for name in classes:
            frame[f"proba_{name}"] = [row[name] for row in probabilities]
        return frame
    if predictions and isinstance(predictions[0], dict):  # quantile levels
        return pd.DataFrame({f"quantile_{level}": [row[level] for row in predictions] for level in predictions[0]})
    return pd.DataFrame({"prediction": predictions})


def answers_from_csv(text: str, class_labels: Iterable[Any] | None) -> pd.DataFrame:
    """The server's CSV answer; class labels typed as the model has them (CSV makes every label text)."""
    frame = pd.read_csv(io.StringIO(text), dtype={"prediction": object}, keep_default_na=False,
                        float_precision="round_trip")
    if any(c.startswith("proba_") for c in frame.columns):
        labels = {str(label): label for label in class_labels or []}
        frame["prediction"] = [labels.get(value, value) for value in frame["prediction"]]
    elif "prediction" in frame.columns:
        frame["prediction"] = frame["prediction"].astype("float64")
    return frame
