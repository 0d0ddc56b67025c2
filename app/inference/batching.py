"""Adaptive micro-batching: concurrent requests for one model become one model call, in each worker.

A request announces itself (ticket) before it validates its rows. The batcher thread takes everything queued and,
while announced requests are still validating and the batch has room, waits for them at most max_wait; a request
alone is never held back. Deferrable work (explanations' masked rows) never shares a call with predictions, waits
while any is queued, and while predictions keep coming it pauses between its calls so that it takes at most
deferred_share of the model's time (predictions count as coming until one deferrable call's duration has passed
without any). Each request gets exactly its own rows back; if the batched call fails, each request's rows are
predicted on their own, so one bad request cannot fail its neighbours. A traced request (app/tracing.py) gets a
batch-wait span, and each model call a span linked to every traced request it served.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from app import tracing

log = logging.getLogger("agserve.batching")


@dataclass
class _Item:
    columns: dict[str, Any]
    n: int
    trace: tracing.RequestTrace | None = None
    queued: int = 0  # time.time_ns() at submission, for a traced request's batch-wait span
    deferrable: bool = False  # work no caller waits on as urgently (explanations' masked rows): predictions go first
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class Ticket:
    """A request on its way to the batcher; leaving the with-block without submitting withdraws it."""

    def __init__(self, batcher: "Batcher", deferrable: bool = False):
        self._batcher = batcher
        self._deferrable = deferrable
        self._open = not deferrable  # deferrable work arrives validated: the batcher never waits for its ticket

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        if self._open:
            self._batcher._withdraw()
            self._open = False

    def submit(self, columns: dict[str, Any], n: int, trace: tracing.RequestTrace | None = None) -> Any:
        announced, self._open = self._open, False
        return self._batcher._submit(_Item(columns, n, trace, 0 if trace is None else time.time_ns(),
                                           self._deferrable), announced)


class Batcher:
    def __init__(self, predict: Callable[[list[dict[str, Any]], list[int]], list[Any]], max_rows: int,
                 max_wait: float, name: str = "model", deferred_share: float = 1.0):
        self._predict = predict  # (columns of each request, row counts) -> one result per request
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.deferred_share = deferred_share  # most of the model's time deferrable work takes while predictions come
        self._queue: deque[_Item] = deque()
        self._announced = 0  # predictions validating (deferrable work never announces itself)
        self._busy = False  # a model call is running (in the batcher thread or inline)
        self._predicted_at = -math.inf  # time.monotonic() when the last prediction call ended
        self._deferred_took = 0.0  # seconds the last deferrable call took
        self._deferred_next = -math.inf  # while predictions come, deferrable work waits until then
        self._closed = False
        self._cv = threading.Condition()
        self.batches = 0  # model calls made
        self.requests = 0  # requests answered through them
        self._thread = threading.Thread(target=self._run, name=f"agserve-batcher-{name}", daemon=True)
        self._thread.start()

    def ticket(self, deferrable: bool = False) -> Ticket:
        """A prediction's ticket, or with deferrable, one for work that yields to predictions."""
        if not deferrable:
            with self._cv:
                self._announced += 1
        return Ticket(self, deferrable)

    def close(self) -> None:
        """Finish what is queued, then stop; later requests are predicted in their own thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def _withdraw(self) -> None:
        with self._cv:
            self._announced -= 1
            self._cv.notify_all()

    def _submit(self, item: _Item, announced: bool = True) -> Any:
        with self._cv:
            if announced:
                self._announced -= 1
            # Alone (nothing running, queued or on its way): predict in this thread, saving two thread hand-offs.
            alone = not self._busy and not self._queue and self._announced == 0 and \
                not (item.deferrable and self._deferral() > 0)
            inline = self._closed or alone
            if alone:
                self._busy = True
            elif not inline:
                self._queue.append(item)
                self._cv.notify_all()
        if inline:
            started = time.monotonic()
            try:
                self._run_batch([item])
            finally:
                if alone:
                    with self._cv:
                        self._ran([item], started)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _deferral(self) -> float:
        """Seconds deferrable work must still wait before its next call (≤ 0: it may run now); lock held."""
        now = time.monotonic()
        quiet_at = self._predicted_at + self._deferred_took  # predictions count as coming until then
        if self._announced == 0 and now >= quiet_at:
            return 0.0
        wait = self._deferred_next - now
        return wait if self._announced else min(wait, quiet_at - now)

    def _take(self) -> list[_Item] | None:
        with self._cv:
            while True:
                if self._closed and not self._queue:
                    return None
                if self._queue and not self._busy:
                    if self._closed or any(not i.deferrable for i in self._queue):
                        break
                    wait = self._deferral()
                    if wait <= 0:
                        break
                    self._cv.wait(wait)
                else:
                    self._cv.wait()
            deadline = time.monotonic() + self.max_wait
            while self._announced > 0 and sum(i.n for i in self._queue) < self.max_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            # Predictions first: deferrable work waits while any prediction is queued, and never joins its call.
            urgent = any(not i.deferrable for i in self._queue)
            batch, rows, later = [], 0, deque()
            while self._queue:
                item = self._queue.popleft()
                if urgent and item.deferrable:
                    later.append(item)
                elif batch and rows + item.n > self.max_rows:  # full: it and everything after it keep their order
                    later.append(item)
                    later.extend(self._queue)
                    self._queue.clear()
                else:
                    batch.append(item)
                    rows += item.n
            self._queue = later
            self._busy = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            started = time.monotonic()
            try:
                self._run_batch(batch)
            finally:
                with self._cv:
                    self._ran(batch, started)

    def _ran(self, batch: list[_Item], started: float) -> None:
        """A model call ended: note when predictions were last served, or how long deferrable work may not start
        again while they come (lock held)."""
        now = time.monotonic()
        self._busy = False
        if all(item.deferrable for item in batch):
            self._deferred_took = now - started
            self._deferred_next = now + self._deferred_took * (1 - self.deferred_share) / self.deferred_share
        else:
            self._predicted_at = now
        if self._queue:  # the batcher thread waits only for queued work: waking it for none costs a GIL hand-off
            self._cv.notify_all()

    def _run_batch(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.trace is not None:
                item.trace.waited(item.queued)
        try:
            results = self._call(batch)
            for item, result in zip(batch, results):
                item.result = result
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                log.warning("batched model call failed; predicting each request alone: %s", exc)
                for item in batch:
                    try:
                        item.result = self._call([item])[0]
                    except BaseException as single:
                        item.error = single
        finally:
            self.batches += 1
            self.requests += len(batch)
            for item in batch:
                item.done.set()

    def _call(self, items: list[_Item]) -> list[Any]:
        """One model call for these requests, traced when any of them is."""
        traces = [item.trace for item in items if item.trace is not None]
        if not traces:
            return self._predict([i.columns for i in items], [i.n for i in items])
        with tracing.model_call(traces, sum(i.n for i in items), len(items)):
            return self._predict([i.columns for i in items], [i.n for i in items])
