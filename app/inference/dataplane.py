"""The data plane: the one place a request's life is written down, from a decoded table to a recorded answer.

Every protocol (POST /predict, POST /models/<name>/predict, V2 infer, CSV, explain) is a thin view: its codec
decodes the body into a Table, the data plane answers it, the codec encodes the answer. The steps, in order:

    1. resolve the model      registry: the served version (404 not served, 503 not ready)
    2. validate               the model's fast column path, or marshmallow row by row (422)
    3. cache look-up          rows answered before by this activation of this version
    4. batch and predict      the other rows, in one model call shared with concurrent requests
    5. cache store            the fresh rows' answers
    6. prediction log         before the answer leaves: an answered prediction is a logged one
    7. monitoring             drift and feedback, noted in memory for the worker's flush thread

No Flask here: the view passes what the request carries in a RequestContext, so the steps are tested without HTTP.
With tracing on (app/tracing.py), each step is a span under the request's server span, as is the view's decode; the
batcher adds the request's batch wait and the model call.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from app import metrics
from app.inference import explain
from app.inference.errors import ServingError
from app.inference.registry import ModelRegistry
from app.inference.served import Prediction, ServedModel
from app.inference.tables import Table, take_rows
from app.predictionlog import PredictionLog, RecordNotKept
from app.state.cache import row_keys
from app.tracing import NO_SPAN, RequestTrace

NOT_RECORDED = "predictions cannot be recorded now and this server answers only recorded ones; retry later"


class NotRecorded(ServingError):
    """AGSERVE_ON_RECORD_FAILURE=refuse and a record of this prediction cannot be kept."""

    status = 503


class ExplanationsBusy(ServingError):
    """Every explanation slot of this worker is taken: refused at once, never queued in front of predictions."""

    status = 503


@dataclass
class RequestContext:
    """What one request carries, from the first hook to the access log: who asked, which model and version
    answered, how many rows, and how long each step took (ms)."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    principal: str | None = None
    model: str | None = None
    version: str | None = None
    rows: int | None = None
    served: ServedModel | None = None  # the version resolved first: decoding and predicting use the same one
    timings: dict[str, float] = field(default_factory=dict)
    trace: RequestTrace | None = None  # the server span, when tracing is on

    def step(self, name: str):
        """A tracing span around one step of this request; a shared do-nothing one when it is not traced."""
        return NO_SPAN if self.trace is None else self.trace.step(name)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round((time.perf_counter() - started) * 1000, 3)


class DataPlane:
    """One per worker, built by create_app from the registry and the optional cache, prediction log and monitor."""

    def __init__(self, registry: ModelRegistry, cache=None, prediction_log: PredictionLog | None = None,
                 monitor=None, refuse_unrecorded: bool = False, explain_concurrency: int = 1):
        self.registry = registry
        self.cache = cache
        self.prediction_log = prediction_log
        self.monitor = monitor
        self.refuse_unrecorded = refuse_unrecorded
        self.explain_limit = explain_concurrency
        self.explain_slots = threading.BoundedSemaphore(explain_concurrency)

    def resolve(self, name: str | None, context: RequestContext, version: str | None = None) -> ServedModel:
        """Step 1: the served model (the default one when name is None), pinned on the context, so that a version
        swapped in while the body is decoded does not answer a table decoded for its predecessor."""
        pinned = context.served
        if pinned is not None and name in (None, pinned.name) and version in (None, pinned.version):
            return pinned
        model = self.registry.get(name, version)
        context.served, context.model, context.version = model, model.name, model.version
        return model

    def infer(self, name: str | None, table: Table, context: RequestContext) -> Prediction:
        """Predict a decoded table with the named model (None: the default), cached, logged and monitored."""
        model = self.resolve(name, context)                                         # 1. resolve
        context.rows = table.n
        self._refuse_when_unrecordable()
        with model.admission() as ticket:  # announced before validating: the batcher waits for such requests
            with context.timed("validate"), context.step("validate"):
                columns = model.validate_table(table)                               # 2. validate
            found, missing = self._cached(model, columns, table.n, context)         # 3. cache look-up
            fresh = None
            if missing:
                part = columns if len(missing) == table.n else take_rows(columns, missing)
                with context.timed("predict"):
                    fresh = ticket.submit(part, len(missing), context.trace)        # 4. batch and predict
        result = fresh if found is None else self._store(found, missing, fresh)  # 5. cache store
        result.inputs = columns
        self._log(model, result, context)                                           # 6. prediction log
        if self.monitor is not None:                                                # 7. monitoring
            with context.step("monitoring"):
                self.monitor.collector.observe_prediction(context.request_id, model, result)
        return result

    def explain(self, name: str | None, table: Table, context: RequestContext, permutations: int) -> list[dict]:
        """Full explanations of a decoded table (every output), within this worker's explanation slots; validation,
        the cache and batched prediction of the masked rows happen in app.inference.explain."""
        model = self.resolve(name, context)
        context.rows = table.n
        if not self.explain_slots.acquire(blocking=False):
            raise ExplanationsBusy("explanations are at their concurrency limit in this worker; retry shortly",
                                   {"limit": self.explain_limit}, headers={"Retry-After": "1"})
        try:
            with context.timed("explain"), context.step("explain"):
                return explain.explain_table(model, table, permutations, self.cache)
        finally:
            self.explain_slots.release()

    # --- the steps --------------------------------------------------------------------------------------------
    def _refuse_when_unrecordable(self) -> None:
        """Under the refuse policy, a monitoring store that failed its last write refuses before any work."""
        if self.refuse_unrecorded and self.monitor is not None and self.monitor.collector.failing:
            raise NotRecorded(NOT_RECORDED, {"store": "monitoring"})

    def _cached(self, model: ServedModel, columns: dict[str, Any], n: int,
                context: RequestContext) -> tuple[list | None, list[int]]:
        """(each row's cached answer or None, the rows to predict); (None, every row) when the cache is skipped."""
        if self.cache is None or n > model.cache_max_rows:
            return None, list(range(n))
        with context.step("cache.lookup"):
            keys = row_keys(model.cache_namespace, columns, model.feature_names, n)
            found = self.cache.get_many(keys)
        missing = [i for i, entry in enumerate(found) if entry is None]
        metrics.observe_cache(model.name, n - len(missing), len(missing))
        return list(zip(keys, found)), missing

    def _store(self, found: list, missing: list[int], fresh: Prediction | None) -> Prediction:
        rows = [entry for _, entry in found]
        if fresh is not None:
            self.cache.set_many({found[i][0]: fresh.row(j) for j, i in enumerate(missing)})
            for j, i in enumerate(missing):
                rows[i] = fresh.row(j)
        return Prediction.from_rows(rows)

    def _log(self, model: ServedModel, result: Prediction, context: RequestContext) -> None:
        if self.prediction_log is None:
            return
        try:
            with context.step("prediction_log"):
                self.prediction_log.write(context.request_id, model.name, model.version, result.inputs,
                                          result.predictions, result.probabilities_json())
        except RecordNotKept:
            raise NotRecorded(NOT_RECORDED, {"store": "prediction_log"}) from None
