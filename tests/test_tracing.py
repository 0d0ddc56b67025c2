"""OpenTelemetry tracing through a real gunicorn, exported over OTLP/HTTP to a receiver in the test: one request is one
trace under the caller's traceparent with a span per data-plane step, a batched model call links every request it
served, and with tracing off a worker has no export thread."""
from __future__ import annotations

import secrets
import subprocess
import threading

import pytest
import requests

from app.tracing import traces_url
from tests.support.answers import expected_answers
from tests.support.apps import build_app, client_with_key
from tests.support.data import FEATURES, to_records
from tests.support.receivers import otlp_receiver
from tests.support.servers import BIN, gunicorn
from tests.support.v2 import v2_body

STEPS = {"decode", "validate", "cache.lookup", "batch.wait", "model.call", "prediction_log", "monitoring"}
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


@pytest.fixture(scope="module")
def traced(repository_path, tmp_path_factory):
    """One worker (so concurrent requests meet in one batcher), exporting to a receiver every 50 ms."""
    log = tmp_path_factory.mktemp("traced") / "log"
    with otlp_receiver() as collector, \
            gunicorn(repository_path, workers=1, AGSERVE_MODELS="multiclass", AGSERVE_OTLP_ENDPOINT=collector.url,
                     AGSERVE_OTEL_SERVICE_NAME="agserve-test", AGSERVE_PREDICTION_LOG_DIR=str(log),
                     AGSERVE_BATCH_MAX_WAIT_MS="1000", OTEL_BSP_SCHEDULE_DELAY="50") as server:
        yield server, collector


def traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent, its trace id and its span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def thread_names(pid: int) -> list[str]:
    """The Python thread names of a running process, read from outside by py-spy (no endpoint, no import)."""
    dump = subprocess.run([str(BIN / "py-spy"), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0, dump.stderr
    return [line.split('"')[1] for line in dump.stdout.splitlines() if line.startswith("Thread ") and '"' in line]


@pytest.mark.parametrize("endpoint, url", [("http://c:4318", "http://c:4318/v1/traces"),
                                           ("https://c/otlp/", "https://c/otlp/v1/traces"),
                                           ("http://c:4318/v1/traces", "http://c:4318/v1/traces")])
def test_the_endpoint_is_a_collectors_base_url_or_its_traces_url(endpoint, url):
    assert traces_url(endpoint) == url


@pytest.mark.server
def test_one_request_is_one_trace_under_the_callers_traceparent(traced, in_process, dataset):
    server, collector = traced
    header, trace_id, caller_span = traceparent()
    root_name, rows = "POST /predict", dataset[1][FEATURES].iloc[0:3]
    answer = server.session().post(f"{server.base}/predict", json={"data": to_records(rows)}, timeout=30,
                                   headers={"traceparent": header, "X-Request-ID": "traced-1"})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["predictions"], body["probabilities"]) == expected_answers(in_process["multiclass"], rows)
    assert answer.headers["traceparent"].split("-")[1] == trace_id  # the trace goes on in the answer too

    spans = collector.wait_for(lambda spans: {s.name for s in spans if s.trace_id == trace_id} >= STEPS | {root_name})
    assert {s.trace_id for s in spans if s.attributes.get("agserve.request_id") == "traced-1"} == {trace_id}
    trace = [s for s in spans if s.trace_id == trace_id]
    [root] = [s for s in trace if s.name == root_name]
    assert root.parent_id == caller_span and root.kind == SERVER_KIND and root.service == "agserve-test"
    assert root.attributes == {"agserve.request_id": "traced-1", "agserve.model": "multiclass",
                               "agserve.model_version": "1", "agserve.rows": 3, "http.request.method": "POST",
                               "url.path": "/predict", "http.route": "/predict", "http.response.status_code": 200}
    steps = {s.name: s for s in trace if s is not root}
    assert sorted(s.name for s in trace if s is not root) == sorted(STEPS)  # each step once, nothing else
    assert all(s.parent_id == root.span_id for s in steps.values())
    for name, span in steps.items():
        assert span.attributes.get("agserve.request_id") == (None if name == "model.call" else "traced-1")  # links
        assert (span.attributes["agserve.model"], span.attributes["agserve.model_version"]) == ("multiclass", "1")
        assert span.attributes.get("agserve.rows") == (None if name == "decode" else 3)  # decode counts them
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns
    order = sorted(STEPS, key=lambda name: steps[name].start_ns)
    assert order == ["decode", "validate", "cache.lookup", "batch.wait", "model.call", "prediction_log", "monitoring"]
    call = steps["model.call"]
    assert call.links == [(trace_id, root.span_id, {"agserve.request_id": "traced-1"})]
    assert call.attributes["agserve.batch.requests"] == 1
    assert collector.paths and set(collector.paths) == {"/v1/traces"}


@pytest.mark.server
def test_a_batched_model_call_links_every_request_it_served(traced, dataset):
    server, collector = traced
    frame = dataset[1][FEATURES]
    merged = None
    for attempt in range(3):  # concurrency decides the merging; three rounds of 12 have always merged some
        callers = [traceparent() for _ in range(12)]
        parts = [frame.iloc[10 + 24 * attempt + 2 * i:12 + 24 * attempt + 2 * i] for i in range(12)]  # fresh rows
        barrier = threading.Barrier(len(callers))
        statuses = [None] * len(callers)

        def send(i):
            barrier.wait()
            statuses[i] = requests.post(f"{server.base}/predict", json={"data": to_records(parts[i])}, timeout=60,
                                        headers={"X-API-Key": server.key, "traceparent": callers[i][0],
                                                 "Connection": "close"}).status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(callers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * len(callers)

        trace_ids = {trace_id for _, trace_id, _ in callers}
        spans = collector.wait_for(lambda spans: sum(
            s.name in ("POST /predict", "batch.wait") and s.trace_id in trace_ids for s in spans) == 2 * len(callers)
            and {link[1] for s in spans if s.name == "model.call" for link in s.links} >=
            {s.span_id for s in spans if s.name == "POST /predict" and s.trace_id in trace_ids})
        requests_spans = {s.span_id: s for s in spans if s.name == "POST /predict" and s.trace_id in trace_ids}
        assert {s.parent_id for s in requests_spans.values()} == {caller for _, _, caller in callers}
        calls = [s for s in spans if s.name == "model.call" and any(link[1] in requests_spans for link in s.links)]
        served = [link[1] for call in calls for link in call.links]
        assert sorted(served) == sorted(requests_spans)  # every request served by exactly one model call
        for call in calls:
            linked = [requests_spans[link[1]] for link in call.links]
            assert call.attributes["agserve.batch.requests"] == len(linked)
            assert call.attributes["agserve.rows"] == 2 * len(linked)
            assert all(link[0] == requests_spans[link[1]].trace_id for link in call.links)
            assert call.parent_id in {span.span_id for span in linked}  # under the first request it served
            assert call.trace_id == requests_spans[call.parent_id].trace_id
        for span in requests_spans.values():  # each request waited for its batch, in its own trace
            [wait] = [s for s in spans if s.name == "batch.wait" and s.parent_id == span.span_id]
            assert wait.trace_id == span.trace_id
        merged = max(len(call.links) for call in calls)
        if merged > 1:
            break
    assert merged > 1, "concurrent requests should have shared a model call"


@pytest.mark.server
def test_export_threads_live_in_workers_and_with_tracing_off_there_are_none(traced, repository_path):
    traced_server_, _ = traced
    [on_worker] = traced_server_.worker_pids()
    assert any(name.startswith("OtelBatch") for name in thread_names(on_worker))  # py-spy does see the exporter
    assert not any(name.startswith("Otel") for name in thread_names(traced_server_.process.pid))  # never the master
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS="multiclass") as server:
        [worker] = server.worker_pids()
        names = thread_names(worker)
        assert "MainThread" in names and not any(name.startswith("Otel") for name in names), names
        header, _, _ = traceparent()
        answer = server.session().get(f"{server.base}/models/multiclass", headers={"traceparent": header}, timeout=30)
        assert answer.status_code == 200 and "traceparent" not in answer.headers


def test_without_batching_the_model_call_is_traced_in_the_requests_thread_and_v2_alike(repository_path, tmp_path, dataset):
    with otlp_receiver() as collector:
        app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary", BATCHING=False,
                        OTLP_ENDPOINT=collector.url)
        try:
            header, trace_id, caller_span = traceparent()
            v2_header, v2_trace_id, _ = traceparent()
            client = client_with_key(app)
            rows = dataset[1][FEATURES].iloc[5:7]
            answer = client.post("/predict", json={"data": to_records(rows)}, headers={"traceparent": header})
            assert answer.status_code == 200
            v2 = client.post("/v2/models/binary/infer", json=v2_body(dataset[1][FEATURES].iloc[7:8]),
                             headers={"traceparent": v2_header})
            assert v2.status_code == 200
        finally:
            app.extensions["agserve.tracer"].shutdown()  # sends what is queued and stops the export thread
        trace = [s for s in collector.spans if s.trace_id == trace_id]
        [root] = [s for s in trace if s.name == "POST /predict"]
        [call] = [s for s in trace if s.name == "model.call"]
        assert root.parent_id == caller_span and call.parent_id == root.span_id
        assert call.links == [(trace_id, root.span_id, {"agserve.request_id": root.attributes["agserve.request_id"]})]
        assert (call.attributes["agserve.rows"], call.attributes["agserve.batch.requests"]) == (2, 1)
        assert "batch.wait" not in {s.name for s in trace}  # no batcher, no wait
        v2_trace = {s.name: s for s in collector.spans if s.trace_id == v2_trace_id}  # the V2 protocol alike
        assert set(v2_trace) == STEPS - {"batch.wait", "prediction_log"} | {"POST /v2/models/<name>/infer"}  # no log here
        assert v2_trace["decode"].parent_id == v2_trace["POST /v2/models/<name>/infer"].span_id


def test_with_tracing_off_no_tracing_hook_is_registered(app):
    from app.api import hooks

    assert app.extensions.get("agserve.tracer") is None
    assert hooks.start_request in app.before_request_funcs[None]  # the list read is the one Flask runs
    assert hooks.start_trace not in app.before_request_funcs[None]
    assert hooks.finish_trace not in app.after_request_funcs[None]
