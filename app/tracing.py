"""OpenTelemetry tracing, built per worker after the fork when AGSERVE_OTLP_ENDPOINT is set.

Off (the default), nothing here is built or even imported from OpenTelemetry: every RequestContext carries
trace=None and each traced step costs one `is None` check. On, a request is one server span, whose parent is the
caller's W3C `traceparent` (so the caller's trace id is kept), with one child span per data-plane step; a model call
is a span of its own that links to every request it served (a micro-batch serves several), and is the child of the
first of them. Spans leave in the background through the SDK's BatchSpanProcessor, over OTLP/HTTP (protobuf).

No Flask here: the request hooks (app/api/hooks.py) start and end the server span, the data plane and the batcher
open the steps.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from app.inference.dataplane import RequestContext

NO_SPAN = nullcontext()  # what a step opens when its request is not traced: shared, stateless, free
TRACES_PATH = "/v1/traces"


class Tracer:
    """This worker's tracer provider, OTLP/HTTP exporter and export thread (one per worker, never in the master)."""

    def __init__(self, endpoint: str, service_name: str, replica: str):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({"service.name": service_name, "service.instance.id": f"{replica}:{os.getpid()}"})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        self.tracer = self.provider.get_tracer("agserve")
        self.propagator = TraceContextTextMapPropagator()

    def start_request(self, headers: Mapping[str, str], name: str, context: "RequestContext",
                      attributes: dict[str, Any]) -> "RequestTrace":
        """The server span of one request, continuing the caller's trace when its `traceparent` is valid."""
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(headers)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                      attributes={"agserve.request_id": context.request_id, **attributes})
        return RequestTrace(self, span, context)

    def shutdown(self) -> None:
        """Export what is still queued, then stop the export thread."""
        self.provider.shutdown()


class RequestTrace:
    """One request's server span; its steps, waits and model calls become its children."""

    __slots__ = ("owner", "span", "request", "parent")

    def __init__(self, owner: Tracer, span, request: "RequestContext"):
        from opentelemetry.trace import set_span_in_context

        self.owner, self.span, self.request = owner, span, request
        self.parent = set_span_in_context(span)  # explicit, so the batcher's thread can parent spans here too

    def attributes(self) -> dict[str, Any]:
        """Request id, model, version and rows, as far as they are known yet."""
        request = self.request
        found = {"agserve.request_id": request.request_id, "agserve.model": request.model,
                 "agserve.model_version": request.version, "agserve.rows": request.rows}
        return {key: value for key, value in found.items() if value is not None}

    def step(self, name: str):
        """A child span around one step; an exception leaving it is recorded on it."""
        return self.owner.tracer.start_as_current_span(name, context=self.parent, attributes=self.attributes())

    def waited(self, since_ns: int) -> None:
        """The time this request's rows spent queued for the batcher, from since_ns (time.time_ns) until now."""
        self.owner.tracer.start_span("batch.wait", context=self.parent, start_time=since_ns,
                                     attributes=self.attributes()).end()

    def finish(self, status: int, headers) -> None:
        """Name what answered, pass the trace on in the response's `traceparent`, and end the server span."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attributes({"http.response.status_code": status, **self.attributes()})
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.owner.propagator.inject(headers, context=self.parent)
        self.span.end()


def model_call(traces: list[RequestTrace], rows: int, requests: int):
    """The span of one model call serving these traced requests: a child of the first, linked to each of them."""
    from opentelemetry.trace import Link

    first = traces[0]
    links = [Link(trace.span.get_span_context(), {"agserve.request_id": trace.request.request_id})
             for trace in traces]
    attributes = {key: value for key, value in first.attributes().items()
                  if key in ("agserve.model", "agserve.model_version")}
    return first.owner.tracer.start_as_current_span(
        "model.call", context=first.parent, links=links,
        attributes={**attributes, "agserve.rows": rows, "agserve.batch.requests": requests})


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: the collector's base URL plus /v1/traces, unless it already ends so."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH
