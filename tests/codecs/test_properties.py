"""Property-based: hostile values of every feature kind through every protocol (JSON records, split, CSV, V2 tensors,
feedback, admin bodies and query strings) against a real gunicorn. Every answer is 2xx or 4xx in the house JSON
shape; a value the rules refuse is refused and one they accept is accepted (tests/support/hostile_values.py says which);
a 2xx prediction equals in-process AutoGluon on the canonical values, and the validated inputs the server's
prediction log records are exactly those values; the server log never holds a traceback.

Each protocol runs with a fixed seed and with a random one (shown in the test id; rerun it with
AGSERVE_PROPERTY_SEED=<seed>)."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from app.api.v2 import proba_names
from tests.support.answers import expected_answers
from tests.support.hostile_values import (CATEGORY_MAX, CSV_HOSTILE, CSV_VALID, HOSTILE, KINDS, MAX_COLUMNS,
                                  ROW, SURROGATE_TEXT, TEXT, TEXT_MAX, Pairs, Raw, Value, body, dump,
                                  reference_frame, row_values, v2_value)
from tests.support.servers import BIN, ROOT, gunicorn, server_env

pytestmark = pytest.mark.server
FEATURES = list(KINDS)
MODELS = ("binary", "regression")
FIXED_SEED = 20261127
RANDOM_SEED = int(os.environ["AGSERVE_PROPERTY_SEED"])  # drawn once per run by tests/conftest.py, or given
SEEDS = [pytest.param(FIXED_SEED, id=f"seed={FIXED_SEED}"), pytest.param(RANDOM_SEED, id=f"seed={RANDOM_SEED}")]
# Examples per protocol with the fixed seed (2,000 together); the random seed runs a quarter as many.
EXAMPLES = {"records": 450, "split": 250, "csv": 400, "v2": 350, "feedback": 250, "admin": 300}
SHAPE = {"error", "details", "request_id"}
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
STATUSES: Counter = Counter()  # answers of the running property, by class
# request id -> the canonical rows of each 2xx prediction sent with it (Hypothesis may send one id twice)
LOGGED: dict[str, list[list[dict[str, Any]]]] = {}


def examples(protocol: str, chosen_seed: int) -> int:
    return EXAMPLES[protocol] if chosen_seed == FIXED_SEED else EXAMPLES[protocol] // 4


def run_property(chosen_seed: int, protocol: str, strategy, check, min_accepted: float = 0.15) -> None:
    """Run check over examples drawn from strategy, reproducibly from chosen_seed."""
    print(f"\n{protocol}: hypothesis seed {chosen_seed} (rerun: AGSERVE_PROPERTY_SEED={chosen_seed})")
    STATUSES.clear()
    configured = settings(max_examples=examples(protocol, chosen_seed), deadline=None, database=None,
                          phases=[Phase.explicit, Phase.generate, Phase.shrink], print_blob=True,
                          suppress_health_check=list(HealthCheck))
    LOGGED.clear()
    seed(chosen_seed)(configured(given(strategy)(check)))()
    check_logged_inputs()
    print(f"{protocol}: statuses {dict(sorted(STATUSES.items()))}")
    total = sum(STATUSES.values())
    accepted, refused = STATUSES["2xx"], STATUSES["4xx"]
    # Both sides of the rules must be reached, or the run proved little. The strategy's balance is a property of the
    # strategy, held to its fractions by the fixed seed; a random seed's quarter-size run varies too much for them.
    if chosen_seed == FIXED_SEED:
        assert accepted >= total * min_accepted and refused >= total * 0.2, STATUSES
    else:
        assert accepted >= 2 and refused >= 2, STATUSES


@pytest.fixture(scope="module")
def server(repository_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("properties")
    log = folder / "gunicorn.log"
    PREDICTION_LOG.append(folder / "predictions")
    with gunicorn(repository_path, workers=2, log_path=log, AGSERVE_MODELS=",".join(MODELS),
                  AGSERVE_PREDICTION_LOG_DIR=str(PREDICTION_LOG[0]),
                  AGSERVE_MAX_COLUMNS=str(MAX_COLUMNS), AGSERVE_MAX_CATEGORY_LENGTH=str(CATEGORY_MAX),
                  AGSERVE_MAX_TEXT_LENGTH=str(TEXT_MAX), AGSERVE_MONITOR_FLUSH_SECONDS="0.1") as running:
        running.log = log
        running.http = running.session()
        yield running


def check_refusal(response: requests.Response, context: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500], context)
    assert response.headers["Content-Type"] == "application/json", context
    assert set(response.json()) == SHAPE, (response.text[:500], context)


def check_status(response: requests.Response, accepted: bool, context: Any) -> None:
    """2xx exactly when the rules accept every value; otherwise a 4xx in the house shape."""
    STATUSES[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (response.status_code, response.text[:500], context)
    if accepted:
        assert response.status_code < 300, (response.status_code, response.text[:1000], context)
    else:
        check_refusal(response, context)


# --- 2xx answers: AutoGluon in-process on the canonical values, and the prediction log ------------------------------
PREDICTION_LOG: list[Path] = []  # the property server's prediction-log folder


def check_logged_inputs() -> None:
    """The validated inputs the prediction log records are each canonical value exactly: a one-ulp change or a
    wrapped integer moves no prediction of these small models, but it shows here. A request id sent more than once
    (the two workers' logs then hold its lines in no common order) is matched with the line that fits it best."""
    logged: dict[str, list[dict[str, Any]]] = {}
    for path in PREDICTION_LOG[0].rglob("*"):
        if path.is_file():
            for line in path.read_bytes().splitlines():
                entry = json.loads(line)
                logged.setdefault(entry["request_id"], []).append(entry["inputs"])
    wrong = []
    for request_id, sent in LOGGED.items():
        lines = logged.get(request_id, [])
        assert len(lines) >= len(sent), f"prediction {request_id} is not in the prediction log"
        for rows in sent:
            wrong.extend(min((_differences(request_id, inputs, rows) for inputs in lines), key=len))
    assert not wrong, wrong[:5]


def _differences(request_id: str, inputs: dict[str, list[Any]], rows: list[dict[str, Any]]) -> list[tuple]:
    if any(len(inputs[name]) != len(rows) for name in KINDS):
        return [(request_id, "rows", len(inputs[next(iter(KINDS))]), len(rows))]
    return [(request_id, name, inputs[name][index], row[name]) for index, row in enumerate(rows)
            for name, kind in KINDS.items() if not same_value(kind, inputs[name][index], row[name])]


def same_value(kind: str, logged: Any, expected: Any) -> bool:
    if expected is None or logged is None:
        return expected is None and logged is None
    if kind == "datetime":
        return datetime.fromisoformat(logged) == expected
    if kind in ("numeric", "integer"):
        return type(logged) in (int, float) and logged == expected
    return type(logged) is type(expected) and logged == expected


def check_prediction(response: requests.Response, in_process, model: str, rows: list[dict[str, Any]], context):
    LOGGED.setdefault(response.headers["X-Request-ID"], []).append(rows)
    predictions, probabilities = expected_answers(in_process[model], reference_frame(rows))
    answer = response.json()
    assert answer["predictions"] == predictions, (rows, answer, context)
    assert answer["probabilities"] == probabilities, (rows, answer, context)


# --- requests: rows of Values in every wire shape --------------------------------------------------------------------
@st.composite
def hostile_rows(draw, valid=ROW, hostile=HOSTILE, max_rows=3) -> list[dict[str, Value]]:
    """1-3 rows of valid values (extremes included), then (mostly) one value replaced by a hostile one: a single
    reason to refuse, so that no refusal hides another value the server should have refused."""
    rows = [dict(draw(valid)) for _ in range(draw(st.integers(1, max_rows)))]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        feature = draw(st.sampled_from(FEATURES))
        rows[draw(st.integers(0, len(rows) - 1))][feature] = draw(hostile[KINDS[feature]])
    return rows


def accepted(rows: list[dict[str, Value]]) -> bool:
    return all(not value.refused for row in rows for value in row.values())


def canonical(rows: list[dict[str, Value]]) -> list[dict[str, Any]]:
    return [{name: value.canonical for name, value in row.items()} for row in rows]


HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
COLUMN_SHAPES = st.sampled_from(["plain"] * 6 + ["duplicate", "unknown", "many", "missing", "surrogate"])


@st.composite
def records_case(draw):
    rows = draw(hostile_rows())
    shape = draw(COLUMN_SHAPES) if accepted(rows) else "plain"  # one reason to refuse at a time
    ok = accepted(rows) and shape in ("plain", "duplicate")
    wire_rows = []
    for row in rows:
        pairs = [(name, value.wire) for name, value in row.items()]
        if shape == "duplicate":  # the last of a repeated key counts, as in orjson and the standard library
            feature = draw(st.sampled_from(FEATURES))
            pairs.insert(0, (feature, draw(HOSTILE[KINDS[feature]]).wire))
        elif shape == "unknown":
            pairs.append((draw(TEXT.filter(lambda t: t not in KINDS)), 1))
        elif shape == "many":
            pairs += [(f"extra{i}", i) for i in range(MAX_COLUMNS + 1)]
        elif shape == "missing":
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
        elif shape == "surrogate":
            pairs.append((draw(SURROGATE_TEXT), 1))
        wire_rows.append(Pairs(pairs))
    return draw(st.sampled_from(MODELS)), rows, wire_rows, ok, draw(st.booleans()), draw(HEADER_TEXT)


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_json_records(server, in_process, chosen_seed):
    def check(case):
        model, rows, wire_rows, ok, ascii_only, request_id = case
        response = server.http.post(f"{server.base}/models/{model}/predict", data=body({"data": wire_rows}, ascii_only),
                                    headers={"Content-Type": "application/json", "X-Request-ID": request_id},
                                    timeout=30)
        check_status(response, ok, wire_rows)
        echoed = response.headers["X-Request-ID"]
        assert echoed == request_id if SAFE_REQUEST_ID.fullmatch(request_id) else re.fullmatch("[0-9a-f]{32}", echoed)
        if ok:
            check_prediction(response, in_process, model, canonical(rows), wire_rows)

    run_property(chosen_seed, "records", records_case(), check)


@st.composite
def split_case(draw):
    rows = draw(hostile_rows())
    columns = draw(st.permutations(FEATURES))
    shape = draw(COLUMN_SHAPES) if accepted(rows) else "plain"
    data = [[row[name].wire for name in columns] for row in rows]
    if shape == "duplicate":
        columns, data = columns + [columns[0]], [values + [values[0]] for values in data]
    elif shape in ("unknown", "surrogate"):
        extra = draw(SURROGATE_TEXT if shape == "surrogate" else TEXT.filter(lambda t: t not in KINDS))
        columns, data = columns + [extra], [values + [1] for values in data]
    elif shape == "many":
        columns = columns + [f"extra{i}" for i in range(MAX_COLUMNS)]
        data = [values + [0] * MAX_COLUMNS for values in data]
    elif shape == "missing":
        columns, data = columns[1:], [values[1:] for values in data]
    ok = accepted(rows) and shape == "plain"
    return draw(st.sampled_from(MODELS)), rows, {"columns": list(columns), "data": data}, ok, draw(st.booleans())


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_json_split(server, in_process, chosen_seed):
    def check(case):
        model, rows, split, ok, ascii_only = case
        response = server.http.post(f"{server.base}/models/{model}/predict", data=body({"data": split}, ascii_only),
                                    headers={"Content-Type": "application/json"}, timeout=30)
        check_status(response, ok, split)
        if ok:
            check_prediction(response, in_process, model, canonical(rows), split)

    run_property(chosen_seed, "split", split_case(), check)


@st.composite
def csv_case(draw):
    rows = draw(hostile_rows(row_values(CSV_VALID), CSV_HOSTILE))
    columns = list(draw(st.permutations(FEATURES)))
    shape = draw(st.sampled_from(["plain"] * 6 + ["duplicate", "unknown", "many", "missing", "bomb"])) \
        if accepted(rows) else "plain"
    cells = [[row[name].wire for name in columns] for row in rows]
    if shape == "duplicate":
        columns, cells = columns + [columns[0]], [values + [values[0]] for values in cells]
    elif shape == "unknown":
        columns, cells = columns + ["surprise"], [values + ["1"] for values in cells]
    elif shape in ("many", "bomb"):
        extra = MAX_COLUMNS if shape == "many" else 20_000
        columns, cells = columns + [f"x{i}" for i in range(extra)], [values + [""] * extra for values in cells]
    elif shape == "missing":
        columns, cells = columns[1:], [values[1:] for values in cells]
    buffer = io.StringIO()
    quote_all = any("\r" in cell for values in cells for cell in values)  # a bare CR would end the row
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])),
                        quoting=csv.QUOTE_ALL if quote_all or draw(st.booleans()) else csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    writer.writerows(cells)
    text = ("\ufeff" if draw(st.booleans()) else "") + buffer.getvalue()
    ok = accepted(rows) and shape == "plain"
    return draw(st.sampled_from(MODELS)), rows, text.encode("utf-8", "surrogatepass"), ok


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_csv(server, in_process, chosen_seed):
    def check(case):
        model, rows, payload, ok = case
        response = server.http.post(f"{server.base}/models/{model}/predict", data=payload,
                                    headers={"Content-Type": "text/csv"}, timeout=30)
        check_status(response, ok, payload[:2000])
        if ok:
            check_prediction(response, in_process, model, canonical(rows), payload[:2000])

    run_property(chosen_seed, "csv", csv_case(), check)


DATATYPES = {"numeric": "FP64", "integer": "INT64", "boolean": "BOOL", "category": "BYTES", "datetime": "BYTES",
             "text": "BYTES"}


@st.composite
def v2_case(draw):
    rows = draw(hostile_rows())
    rows = [{name: v2_value(KINDS[name], value) for name, value in row.items()} for row in rows]
    shape = draw(st.sampled_from(["plain"] * 6 + ["nested", "duplicate", "unknown", "many", "missing", "datatype"])) \
        if accepted(rows) else draw(st.sampled_from(["plain", "nested"]))
    inputs = []
    for name in draw(st.permutations(FEATURES)):
        data = [row[name].wire for row in rows]
        tensor_shape = [len(data)]
        if shape == "nested":
            data, tensor_shape = [[v] for v in data], [len(data), 1]
        inputs.append({"name": name, "datatype": DATATYPES[KINDS[name]], "shape": tensor_shape, "data": data})
    if shape == "duplicate":
        inputs.append(inputs[0])
    elif shape == "unknown":
        inputs.append(dict(inputs[0], name="surprise"))
    elif shape == "many":
        inputs += [dict(inputs[0], name=f"x{i}") for i in range(MAX_COLUMNS)]
    elif shape == "missing":
        inputs.pop()
    elif shape == "datatype":
        inputs[0] = dict(inputs[0], datatype=draw(st.sampled_from(["FP128", "", "STRING", "BF16"])))
    ok = accepted(rows) and shape in ("plain", "nested")
    return draw(st.sampled_from(MODELS)), rows, {"id": "p", "inputs": inputs}, ok, draw(st.booleans())


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_v2_tensors(server, in_process, chosen_seed):
    def check(case):
        model, rows, request, ok, ascii_only = case
        response = server.http.post(f"{server.base}/v2/models/{model}/infer", data=body(request, ascii_only),
                                    headers={"Content-Type": "application/json"}, timeout=30)
        check_status(response, ok, request)
        if not ok:
            return
        LOGGED.setdefault(response.headers["X-Request-ID"], []).append(canonical(rows))
        predictions, probabilities = expected_answers(in_process[model], reference_frame(canonical(rows)))
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        if probabilities is None:
            assert outputs["predictions"] == predictions, (request, outputs)
        else:
            assert outputs["predictions"] == [str(p) for p in predictions], (request, outputs)
            for label, name in proba_names(list(probabilities[0])).items():
                assert outputs[name] == [row[label] for row in probabilities], (request, outputs)

    # V2's stricter types (no text for numbers, NaN alone as missing) refuse more of the same rows: about 14-16 % pass.
    run_property(chosen_seed, "v2", v2_case(), check, min_accepted=0.1)


# --- feedback: outcomes of every type for answered predictions -------------------------------------------------------
@pytest.fixture(scope="module")
def answered(server, dataset) -> dict[str, str]:
    """A request id per model whose one-row prediction the monitoring store has recorded."""
    from tests.support.data import to_records

    row = to_records(dataset[1][FEATURES].dropna().head(1))[0]
    ids = {}
    for model in MODELS:
        response = server.http.post(f"{server.base}/models/{model}/predict", json={"data": [row]}, timeout=30)
        assert response.status_code == 200
        ids[model] = response.json()["request_id"]
    return ids


ACTUALS = st.one_of(st.floats(allow_nan=False), st.integers(-(2 ** 64), 2 ** 64), st.integers(10 ** 300, 10 ** 400),
                    st.sampled_from(["yes", "no", "Yes", " yes", "", None, True, False, 1, 0]).map(lambda v: v),
                    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400]).map(Raw),
                    TEXT, SURROGATE_TEXT, st.lists(st.floats(allow_nan=False), max_size=2),
                    st.integers(2, 3000).map(lambda d: Raw("[" * d + "1" + "]" * d)), st.just({"a": 1}))


def outcome_accepted(model: str, actual: Any, by_request: bool) -> bool:
    if isinstance(actual, list):  # by request id, a list of one value per row (these requests had one row)
        return by_request and len(actual) == 1 and outcome_accepted(model, actual[0], False)
    if model == "binary":
        return isinstance(actual, str) and actual in ("yes", "no")
    if isinstance(actual, Raw) or isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return False
    try:
        return np.isfinite(float(actual))
    except OverflowError:
        return False


@st.composite
def feedback_case(draw):
    model = draw(st.sampled_from(MODELS))
    plausible = st.sampled_from(["yes", "no"]) if model == "binary" else st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2 ** 64), 2 ** 64))
    actual = draw(plausible if draw(st.integers(0, 2)) else ACTUALS)  # one_of would flatten to ACTUALS' branches
    form = draw(st.sampled_from(["prediction_id", "request_id", "batch", "duplicate"] * 2 + ["unknown", "both"]))
    return model, actual, form, draw(st.booleans())


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_feedback(server, answered, chosen_seed):
    def check(case):
        model, actual, form, ascii_only = case
        ok = outcome_accepted(model, actual, form == "request_id") and \
            form in ("prediction_id", "request_id", "batch", "duplicate")
        ident = [("prediction_id", f"{answered[model]}:0")] if form != "request_id" else \
            [("request_id", answered[model])]
        pairs = ident + [("actual", actual)]
        if form == "duplicate":
            pairs.insert(0, ("actual", "a value replaced by the last one"))
        elif form == "unknown":
            pairs.append(("surprise", 1))
        elif form == "both":
            pairs.append(("request_id", answered[model]))
        document = {"feedback": [Pairs(pairs)]} if form == "batch" else Pairs(pairs)
        response = deadline_retry(lambda: server.http.post(
            f"{server.base}/feedback", data=body(document, ascii_only), headers={"Content-Type": "application/json"},
            timeout=30))
        check_status(response, ok, dump(document)[:2000])

    run_property(chosen_seed, "feedback", feedback_case(), check)


def deadline_retry(send) -> requests.Response:
    """The first feedback may arrive before the worker's flush has stored the prediction (404): retry briefly."""
    deadline = time.monotonic() + 10
    response = send()
    while response.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = send()
    return response


# --- admin bodies and query strings ----------------------------------------------------------------------------------
SCOPES = ("predict", "model_info", "admin", "metrics")
DURATIONS = st.one_of(st.builds(lambda n, unit, pad: f"{pad}{n}{unit}{pad}", st.integers(0, 10 ** 13),
                                st.sampled_from("smhdy"), st.sampled_from(["", " "])),
                      st.sampled_from(["9999999999999999999d", "3650d", "3651d", "315360000s", "315360001s", "",
                                       "30", "d", "1.5d", "-1d", "１d"]),
                      TEXT, SURROGATE_TEXT, st.integers(), st.none())
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_accepted(value: Any) -> bool:
    if value is None:
        return True
    match = re.fullmatch(r"([0-9]{1,12})([smhd])", value.strip()) if isinstance(value, str) else None
    return bool(match) and 0 < int(match.group(1)) * UNITS[match.group(2)] <= 3650 * 86400


@st.composite
def key_case(draw):
    def field(plausible, hostile):  # mostly plausible, so that the accepting side is reached too
        return draw(plausible if draw(st.integers(0, 3)) else hostile)

    owner = field(st.text(min_size=1, max_size=30).filter(str.strip),
                  st.one_of(TEXT, SURROGATE_TEXT, st.integers(190, 210).map(lambda n: "o" * n), st.integers(),
                            st.none()))
    scopes = field(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=4),
                   st.one_of(st.lists(st.sampled_from(SCOPES), max_size=6), st.lists(TEXT, max_size=2),
                             st.lists(SURROGATE_TEXT, min_size=1, max_size=1), TEXT, st.none()))
    expires = field(st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 3650), st.sampled_from("smhd")),
                    DURATIONS)
    shape = draw(st.sampled_from(["plain"] * 4 + ["absent", "unknown"]))
    ok = (isinstance(owner, str) and not any(0xD800 <= ord(c) <= 0xDFFF for c in owner)
          and 1 <= len(owner.strip()) <= 200
          and isinstance(scopes, list) and 1 <= len(scopes) <= 4 and all(s in SCOPES for s in scopes)
          and (shape == "absent" or duration_accepted(expires)) and shape != "unknown")
    pairs = [("owner", owner), ("scopes", scopes)] + ([("expires_in", expires)] if shape != "absent" else [])
    if shape == "unknown":
        pairs.append(("role", "root"))
    limit = draw(st.one_of(st.integers(-5, 1005).map(str), st.text(max_size=30)))
    return Pairs(pairs), ok, draw(st.booleans()), limit


@pytest.mark.parametrize("chosen_seed", SEEDS)
def test_admin_bodies_and_query_strings(server, chosen_seed):
    def check(case):
        document, ok, ascii_only, limit = case
        response = server.http.post(f"{server.base}/admin/keys", data=body(document, ascii_only),
                                    headers={"Content-Type": "application/json"}, timeout=30)
        check_status(response, ok, dump(document)[:2000])
        listing = server.http.get(f"{server.base}/admin/keys", timeout=30)
        assert listing.status_code == 200, listing.text[:500]
        audit = server.http.get(f"{server.base}/admin/audit", params={"limit": limit}, timeout=30)
        in_range = re.fullmatch("[0-9]{1,4}", limit.strip()) is not None and 1 <= int(limit) <= 1000
        check_status(audit, in_range, limit)

    run_property(chosen_seed, "admin", key_case(), check)
    listed = subprocess.run([str(BIN / "agserve"), "keys", "list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=server_env(AGSERVE_AUTH_DB=str(server.auth_db)))
    assert listed.returncode == 0, listed.stderr[-2000:]


def test_the_server_logged_no_traceback(server):
    """Last in this module: every refusal above was handled, none reached the unexpected-error handler."""
    text = Path(server.log).read_text(errors="replace")
    assert "Traceback" not in text and '"traceback"' not in text, \
        [line for line in text.splitlines() if "raceback" in line][:3]
    assert '"status": 500' not in text
