"""OpenTelemetry tracing through a real gunicorn, exported over OTLP/HTTP to a receiver in the test: one request is one
trace under the caller's traceparent with a span per data-plane step, a batched model call links every request it
served, any traceparent and tracestate a caller sends (Hypothesis, a fixed seed and a random one shown in the test id;
rerun it with AGSERVE_PROPERTY_SEED=<seed>) is kept when valid and starts a new trace when not, and with tracing off a
worker has no export thread."""
from __future__ import annotations

import os
import random
import re
import secrets
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

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
    """One worker (so concurrent requests meet in one batcher), exporting to a receiver every 50 ms; its output is
    kept in server.log."""
    folder = tmp_path_factory.mktemp("traced")
    with otlp_receiver() as collector, \
            gunicorn(repository_path, workers=1, log_path=folder / "server.log", AGSERVE_MODELS="multiclass",
                     AGSERVE_OTLP_ENDPOINT=collector.url, AGSERVE_OTEL_SERVICE_NAME="agserve-test",
                     AGSERVE_PREDICTION_LOG_DIR=str(folder / "log"), AGSERVE_BATCH_MAX_WAIT_MS="1000",
                     OTEL_BSP_SCHEDULE_DELAY="50") as server:
        server.log = folder / "server.log"
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


FIXED_SEED = 20261127
RANDOM_SEED = int(os.environ.get("AGSERVE_PROPERTY_SEED") or random.SystemRandom().randrange(2 ** 32))
SEEDS = [pytest.param(FIXED_SEED, id=f"seed={FIXED_SEED}"), pytest.param(RANDOM_SEED, id=f"seed={RANDOM_SEED}")]
HEX = "0123456789abcdef"
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # what gunicorn refuses in a header value (RFC 9110 5.5)
ANSWER = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")  # what the server sends on: version 00, its span


def hex_text(size: int):
    return st.text(HEX, min_size=size, max_size=size)


@st.composite
def valid_traceparent(draw) -> str:
    """W3C trace context: version (not ff), trace id and parent id (not all zeros), flags; a later version may
    carry more fields after a dash."""
    version = draw(st.sampled_from(["00", "00", "01", "cc"]))
    value = "-".join([version, draw(hex_text(32).filter(lambda h: h != "0" * 32)),
                      draw(hex_text(16).filter(lambda h: h != "0" * 16)), draw(hex_text(2))])
    return value + (draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(
        lambda extra: "-" + extra)) if version != "00" and draw(st.booleans()) else "")


@st.composite
def broken_traceparent(draw) -> str:
    """A valid traceparent spoiled one way, or text that never was one."""
    value = draw(valid_traceparent()).split("-")
    spoil = draw(st.sampled_from(["upper", "short", "long", "not hex", "ff", "zero trace", "zero span", "extra",
                                  "control", "surrogate", "other", "too long"]))
    field = draw(st.integers(0, 3))
    if spoil == "upper":
        value[field] = value[field].upper() if any(c in "abcdef" for c in value[field]) else "A" + value[field][1:]
    elif spoil in ("short", "long"):
        value[field] = value[field][:-1] if spoil == "short" else value[field] + draw(st.sampled_from(HEX))
    elif spoil == "not hex":
        at = draw(st.integers(0, len(value[field]) - 1))
        value[field] = value[field][:at] + draw(st.sampled_from("gxZ.+ _é\u00a0")) + value[field][at + 1:]
    elif spoil == "ff":
        value[0] = "ff"
    elif spoil == "zero trace":
        value[1] = "0" * 32
    elif spoil == "zero span":
        value[2] = "0" * 16
    elif spoil == "extra":
        value = ["00", *value[1:4], draw(hex_text(2))]
    elif spoil in ("control", "surrogate"):
        odd = draw(st.characters(min_codepoint=1, max_codepoint=31).filter(lambda c: c not in "\t\r\n")
                   if spoil == "control" else st.characters(categories=["Cs"]))
        at = draw(st.integers(1, len(value[field]) - 1))  # inside the value: leading and trailing tabs are trimmed
        value[field] = value[field][:at] + odd + value[field][at:]
    elif spoil == "other":
        return draw(st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=80))
    else:
        return "-".join(value) + "-" + "a" * 600
    return "-".join(value)


TRACESTATE = st.one_of(
    st.none(),
    st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_*/-]{0,20}", fullmatch=True),
                       st.from_regex(r"[!-+.-<>-~]{1,30}", fullmatch=True)), max_size=40).map(
        lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)),
    st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=200),
    st.integers(100, 7000).map(lambda size: ("k=" + "v" * size)),  # past the 512 characters W3C allows
)


def w3c_trace_id(value: str) -> str | None:
    """The trace id a valid traceparent carries (W3C trace context, level 1), None for an invalid one; the
    surrounding spaces and tabs are the HTTP field's and not the value's."""
    value = value.strip(" \t")
    fields = value[:55].split("-")
    if len(value) < 55 or len(fields) != 4 or [len(f) for f in fields] != [2, 32, 16, 2] or \
            any(set(f) - set(HEX) for f in fields) or fields[0] == "ff" or fields[1] == "0" * 32 or \
            fields[2] == "0" * 16 or len(value) > 512:
        return None
    if len(value) > 55 and (fields[0] == "00" or value[55] != "-"):
        return None
    return fields[1]


@pytest.mark.server
@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_any_traceparent_is_kept_when_valid_and_starts_a_new_trace_when_not(traced, dataset, chosen_seed):
    """Whatever traceparent and tracestate a caller sends, with a good row, a bad row or no key: the answer is a 2xx
    or a 4xx in the house shape; its traceparent, and the exported server span, keep a valid traceparent's trace id
    (the caller's span as parent) and start a new trace for an invalid one."""
    print(f"\ntraceparent: hypothesis seed {chosen_seed} (rerun: AGSERVE_PROPERTY_SEED={chosen_seed})")
    server, collector = traced
    good = to_records(dataset[1][FEATURES].iloc[40:41])
    bodies = {200: {"data": good}, 422: {"data": [dict(good[0], num="n/a")]}, 401: {"data": good}}
    sent, statuses = [], {}

    @settings(max_examples=120 if chosen_seed == FIXED_SEED else 40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(valid_traceparent(), broken_traceparent()), TRACESTATE, st.sampled_from(sorted(bodies)))
    def check(parent, state, expected):
        parent, state = parent.strip(" \t"), None if state is None else state.strip(" \t")  # HTTP trims a field
        # requests will not send a value that starts with \f or \v (its own check): a letter first, so the control
        # character still reaches the server.
        parent = "x" + parent if parent[:1] in ("\f", "\v") else parent
        state = "x" + state if state is not None and state[:1] in ("\f", "\v") else state
        request_id = f"tp-{chosen_seed}-{len(sent)}"
        headers = {"traceparent": parent.encode("utf-8", "surrogatepass"), "X-Request-ID": request_id}
        if state is not None:
            headers["tracestate"] = state.encode("utf-8", "surrogatepass")
        if expected != 401:
            headers["X-API-Key"] = server.key
        unparsable = any(CONTROL.search(value) for value in (headers["traceparent"], headers.get("tracestate", b"")))
        answer = requests.post(f"{server.base}/predict", json=bodies[expected], headers=headers, timeout=30)
        assert answer.status_code == (400 if unparsable else expected), (parent, state, answer.text[:300])
        if answer.status_code >= 400:
            assert set(answer.json()) == {"error", "details", "request_id"}, answer.text[:300]
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if unparsable:  # gunicorn refuses the request before the app, and so before any trace
            assert "traceparent" not in answer.headers
            return
        caller = w3c_trace_id(parent.encode("utf-8", "surrogatepass").decode("latin-1"))  # as WSGI reads a header
        kept = ANSWER.fullmatch(answer.headers.get("traceparent", ""))
        assert kept, answer.headers.get("traceparent")
        assert (kept.group(1) == caller) if caller else kept.group(1) not in parent, (parent, kept.group(0))
        sent.append((request_id, parent, caller, kept.group(1)))

    seed(chosen_seed)(check)()
    # A valid traceparent without the sampled flag is the caller's decision not to record: no span is exported
    recorded = {request_id for request_id, parent, caller, _ in sent if caller is None or int(parent[53:55], 16) & 1}
    spans = collector.wait_for(lambda spans: recorded <= {s.attributes.get("agserve.request_id") for s in spans
                                                          if s.name == "POST /predict"})
    roots = {s.attributes["agserve.request_id"]: s for s in spans if s.name == "POST /predict"
             and str(s.attributes.get("agserve.request_id")).startswith(f"tp-{chosen_seed}-")}
    assert set(roots) == recorded
    for request_id, parent, caller, answered in sent:
        if request_id in recorded:
            root = roots[request_id]
            assert root.trace_id == answered, (parent, root.trace_id, answered)
            assert root.parent_id == (parent[36:52] if caller else ""), (parent, root.parent_id)
    valid = sum(caller is not None for _, _, caller, _ in sent)
    print(f"traceparent: {valid} valid ({len(recorded) - len(sent) + valid} sampled), {len(sent) - valid} invalid; "
          f"statuses {statuses}")
    assert min(valid, len(sent) - valid) >= 5, statuses
    assert statuses.get(400, 0) >= 1 or chosen_seed != FIXED_SEED, statuses  # a random seed's short run may miss it
    text = Path(server.log).read_text(errors="replace")
    assert "Traceback" not in text and '"status": 5' not in text, \
        [line for line in text.splitlines() if "raceback" in line or '"status": 5' in line][:3]


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
