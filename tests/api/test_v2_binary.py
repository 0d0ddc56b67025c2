"""The Open Inference Protocol's binary tensor data extension against a real gunicorn: tritonclient and KServe's
InferenceRESTClient at their defaults (binary inputs, binary outputs asked for and decoded by the client) answer what
in-process AutoGluon answers; random tensors answer in binary exactly what they answer as JSON; malformed binary
bodies are refused with a 4xx in the house shape naming the field, never a 5xx, and cheaply."""
from __future__ import annotations

import json
import math
import struct
import subprocess
import time
from collections import Counter
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.v2 import proba_names
from tests.support.v2 import DATATYPES, tensors
from tests.support.data import FEATURES, mixed_frame
from tests.support.servers import ROOT, gunicorn
from tests.support.cost import LIMIT, worker_cpu_and_rss

pytestmark = pytest.mark.server
MODELS = ("binary", "regression")
HEADER = "Inference-Header-Content-Length"
SHAPE = {"error", "details", "request_id"}
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
NUMPY = {"BOOL": "u1", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "UINT8": "<u1",
         "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


@pytest.fixture(scope="module")
def server(repository_path, tmp_path_factory):
    # Cache off: a JSON request after its binary twin must be predicted again, not answered from the cache.
    log = tmp_path_factory.mktemp("binary") / "predictions"
    with gunicorn(repository_path, workers=1, AGSERVE_MODELS=",".join(MODELS), AGSERVE_CACHE="false",
                  AGSERVE_PREDICTION_LOG_DIR=str(log)) as running:
        running.http = running.session()
        running.prediction_log = log
        yield running


def logged_inputs(folder) -> dict[str, dict]:
    """Request id → the validated inputs the server's prediction log recorded for it."""
    return {entry["request_id"]: entry["inputs"] for path in folder.rglob("*") if path.is_file()
            for entry in map(json.loads, path.read_bytes().splitlines())}


def expected(in_process, name: str, rows) -> dict[str, list]:
    """In-process AutoGluon's answer in the V2 outputs' layout."""
    predictor = in_process[name]
    if predictor.problem_type == "regression":
        return {"predictions": predictor.predict(rows[FEATURES]).astype("float64").tolist()}
    proba = predictor.predict_proba(rows[FEATURES], as_multiclass=True)
    answer = {"predictions": [str(p) for p in predictor.predict(rows[FEATURES])]}
    answer.update({output: proba[label].astype("float64").tolist()
                   for label, output in proba_names([str(c) for c in proba.columns]).items()})
    return answer


# --- the official clients at their defaults --------------------------------------------------------------------------
def test_tritonclient_defaults_send_and_receive_binary_and_equal_in_process_autogluon(server, in_process):
    import tritonclient.http as triton

    rows = mixed_frame(n=12, seed=173)
    assert rows[FEATURES].isna().any().sum() >= 3  # missing numbers, categories and text travel in binary too
    client = triton.InferenceServerClient(url=server.base.removeprefix("http://"))
    headers = {"X-API-Key": server.key}
    assert "binary_tensor_data" in client.get_server_metadata(headers=headers)["extensions"]
    for name in MODELS:
        inputs = []
        for feature, array in tensors(rows).items():
            tensor = triton.InferInput(feature, list(array.shape), DATATYPES[feature])
            tensor.set_data_from_numpy(array)  # the default: binary_data=True
            assert tensor._get_binary_data() is not None
            inputs.append(tensor)
        want = expected(in_process, name, rows)
        # No outputs named: the client asks for all of them as binary (parameters.binary_data_output).
        everything = client.infer(name, inputs, request_id=f"all-{name}", headers=headers)
        # Outputs named with InferRequestedOutput's default binary_data=True.
        named = client.infer(name, inputs, headers=headers,
                             outputs=[triton.InferRequestedOutput(output) for output in want])
        for result in (everything, named):
            response = result.get_response()
            assert {o["name"] for o in response["outputs"]} == set(want)
            assert all(o["parameters"]["binary_data_size"] > 0 and "data" not in o for o in response["outputs"])
            for output, values in want.items():
                got = result.as_numpy(output).tolist()
                assert [v.decode() if isinstance(v, bytes) else v for v in got] == values, (name, output)
        assert everything.get_response()["id"] == f"all-{name}"


def kserve_client(spec: dict) -> dict:
    """Run tests/api/kserve_client.py in KServe's own venv (make kserve-client builds it; kept current here)."""
    subprocess.run(["make", "-s", "kserve-client"], cwd=ROOT, check=True, timeout=900)
    done = subprocess.run([str(KSERVE_PYTHON), str(ROOT / "tests" / "api" / "kserve_client.py")], cwd="/",
                          input=json.dumps(spec), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_kserve_rest_client_defaults_send_and_receive_binary_and_equal_in_process_autogluon(server, in_process):
    rows = mixed_frame(n=12, seed=172)
    assert rows[FEATURES].isna().any().sum() >= 3
    inputs = [{"name": feature, "datatype": DATATYPES[feature],
               "values": [None if isinstance(v, float) and math.isnan(v) else v for v in array.tolist()]}
              for feature, array in tensors(rows).items()]
    asks = {"binary": ({"binary_data_output": True}, None),  # every output binary
            "regression": (None, [{"name": "predictions", "parameters": {"binary_data": True}}])}  # per output
    for name in MODELS:
        parameters, outputs = asks[name]
        got = kserve_client({"url": server.base, "key": server.key, "model": name, "request_id": f"k-{name}",
                             "inputs": inputs, "parameters": parameters, "outputs": outputs})
        assert got["sent_binary"] == list(FEATURES)  # the client's default put every input in binary
        want = expected(in_process, name, rows)
        assert got["id"] == f"k-{name}" and got["outputs"] == want
        assert got["header_length"] is not None and got["content_type"] == "application/octet-stream"
        assert all(got["binary_sizes"][output] > 0 for output in want), got["binary_sizes"]


# --- building binary requests by hand --------------------------------------------------------------------------------
def raw_bytes(datatype: str, values: list) -> bytes:
    if datatype == "BYTES":
        items = [v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for v in values]
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    return np.asarray(values, dtype=NUMPY[datatype]).tobytes()


def binary_request(document: dict, raws: list[bytes | None]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a binary request: each input with a raw section gets its binary_data_size."""
    document = json.loads(json.dumps(document))
    for tensor, raw in zip(document["inputs"], raws):
        if raw is not None:
            tensor.pop("data", None)
            tensor.setdefault("parameters", {})["binary_data_size"] = len(raw)
    header = json.dumps(document).encode()
    return header + b"".join(r for r in raws if r is not None), {HEADER: str(len(header)),
                                                                 "Content-Type": "application/octet-stream"}


def decoded_outputs(response) -> dict[str, list]:
    """The answer's outputs as tritonclient decodes them (binary sections or JSON data)."""
    from tritonclient.http import InferResult

    length = response.headers.get(HEADER)
    result = InferResult.from_response_body(response.content, header_length=int(length) if length else None)
    return {o["name"]: [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy(o["name"]).tolist()]
            for o in result.get_response()["outputs"]}


def json_value(value):
    """What a JSON client sends for a value a binary client sent: the same float64, an int, a bool or a string."""
    return value.item() if isinstance(value, np.generic) else value


# --- property: binary answers what JSON answers ----------------------------------------------------------------------
FLOAT_TYPES = {"FP64": 64, "FP32": 32, "FP16": 16}
INT_TYPES = {"INT64": (-2 ** 63, 2 ** 63 - 1), "INT32": (-2 ** 31, 2 ** 31 - 1), "INT16": (-2 ** 15, 2 ** 15 - 1),
             "INT8": (-128, 127), "UINT64": (0, 2 ** 63 - 1), "UINT32": (0, 2 ** 32 - 1), "UINT16": (0, 2 ** 16 - 1),
             "UINT8": (0, 255)}  # UINT64 beyond int64 is refused in binary only: tested with the malformed bodies
STRINGS = st.one_of(st.text(max_size=8), st.sampled_from(["", " a ", "red", "blue", "é", "\x00", "\U0001f600"]))
MOMENTS = st.one_of(st.datetimes(datetime(1700, 1, 1), datetime(2200, 1, 1)).map(datetime.isoformat),
                    st.sampled_from(["", "yesterday", "2024-02-30"]))


@st.composite
def numbers(draw, datatypes: list[str], n: int):
    datatype = draw(st.sampled_from(datatypes))
    if datatype in FLOAT_TYPES:
        width = FLOAT_TYPES[datatype]
        values = draw(st.lists(st.floats(width=width, allow_nan=True, allow_infinity=draw(st.booleans())),
                               min_size=n, max_size=n))
        return datatype, np.asarray(values, dtype=NUMPY[datatype]).tolist()
    low, high = INT_TYPES[datatype]
    return datatype, draw(st.lists(st.integers(low, high), min_size=n, max_size=n))


@st.composite
def equivalent_requests(draw):
    n = draw(st.integers(1, 4))
    columns = {"num": draw(numbers(list(FLOAT_TYPES) + list(INT_TYPES), n)),
               "cnt": draw(numbers(list(INT_TYPES) + ["FP64", "FP32"], n)),
               "flag": ("BOOL", draw(st.lists(st.booleans(), min_size=n, max_size=n))),
               "color": ("BYTES", draw(st.lists(STRINGS, min_size=n, max_size=n))),
               "when": ("BYTES", draw(st.lists(MOMENTS, min_size=n, max_size=n))),
               "note": ("BYTES", draw(st.lists(STRINGS, min_size=n, max_size=n)))}
    order = draw(st.permutations(FEATURES))
    nested = draw(st.booleans())
    inputs = [{"name": f, "datatype": columns[f][0], "shape": [n, 1] if nested else [n], "data": columns[f][1]}
              for f in order]
    binary = [draw(st.booleans()) or i == 0 for i in range(len(inputs))]  # at least one binary input
    document = {"id": "eq", "inputs": inputs}
    model = draw(st.sampled_from(MODELS))
    if draw(st.booleans()):
        document["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        document["outputs"] = [{"name": "predictions", "parameters": {"binary_data": draw(st.booleans())}}]
    raws = [raw_bytes(t["datatype"], t["data"]) if b else None for t, b in zip(inputs, binary)]
    return model, document, raws


PROPERTY = settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_binary_tensors_answer_what_the_same_json_tensors_answer(server):
    statuses: Counter = Counter()
    twins: list[tuple[str, str]] = []
    PROPERTY(given(case=equivalent_requests())(lambda case: same_answers(server, case, statuses, twins)))()
    print(statuses)
    # Both sides reached, or the run proved little: answers compared, and refusals agreed on.
    assert statuses[2] >= 30 and statuses[4] >= 10, statuses
    # The model saw the same values: a changed value need not move these small models' answers, but it shows here.
    logged = logged_inputs(server.prediction_log)
    assert all(logged[binary] == logged[plain] for binary, plain in twins), \
        next((logged[b], logged[p]) for b, p in twins if logged[b] != logged[p])


def same_answers(server, case, statuses: Counter, twins: list[tuple[str, str]]) -> None:
    model, document, raws = case
    url = f"{server.base}/v2/models/{model}/infer"
    body, headers = binary_request(document, raws)
    binary = server.http.post(url, data=body, headers=headers, timeout=30)
    plain = server.http.post(url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"},
                             timeout=30)
    assert binary.status_code < 500 and plain.status_code < 500, (binary.text[:300], plain.text[:300])
    assert binary.status_code // 100 == plain.status_code // 100, (document, binary.text[:500], plain.text[:500])
    statuses[plain.status_code // 100] += 1
    if plain.status_code >= 400:
        assert set(binary.json()) == SHAPE
        return
    # Each output is binary as its own binary_data says, else as the request's binary_data_output says.
    default = (document.get("parameters") or {}).get("binary_data_output", False)
    named = {o["name"]: o["parameters"]["binary_data"] for o in document.get("outputs", [])}
    length = int(binary.headers.get(HEADER, len(binary.content)))
    header = json.loads(binary.content[:length])
    assert {o["name"]: "parameters" in o for o in header["outputs"]} == \
        {o["name"]: named.get(o["name"], default) for o in header["outputs"]}, (document, header)
    assert (HEADER in binary.headers) == any(named.values() if named else [default])
    assert decoded_outputs(binary) == decoded_outputs(plain), document
    twins.append((binary.headers["X-Request-ID"], plain.headers["X-Request-ID"]))


# --- property: malformed binary bodies are refused in the house shape, naming the field ------------------------------
def valid_parts(rows) -> tuple[dict, list[bytes]]:
    document = {"inputs": [{"name": f, "datatype": DATATYPES[f], "shape": [len(rows)],
                            "data": [json_value(v) for v in a.tolist()]} for f, a in tensors(rows).items()]}
    return document, [raw_bytes(t["datatype"], t["data"]) for t in document["inputs"]]


BYTES_INPUT = FEATURES.index("color")
MUTATIONS = ["header beyond body", "header negative", "header huge", "header not a number", "header cuts the JSON",
             "size beyond body", "size negative", "size not an int", "shape mismatch", "truncated item",
             "invalid utf-8", "lone surrogate", "uint64 beyond int64", "infinity", "bool byte", "trailing bytes",
             "data and size", "huge shape", "rows past AGSERVE_MAX_ROWS", "binary_data_output not a bool",
             "datatype without binary form"]


@st.composite
def malformed(draw, mutation: str):
    rows = mixed_frame(n=draw(st.integers(1, 3)), seed=draw(st.integers(0, 50)))
    document, raws = valid_parts(rows)
    index = draw(st.integers(0, len(raws) - 1))
    tensor = document["inputs"][index]
    if mutation == "size beyond body":
        body, headers = binary_request(document, raws)
        data = json.loads(body[:int(headers[HEADER])])
        data["inputs"][index]["parameters"]["binary_data_size"] += draw(st.integers(1, 10 ** 12))
        header = json.dumps(data).encode()
        return mutation, header + b"".join(raws), {HEADER: str(len(header))}
    if mutation in ("size negative", "size not an int"):
        body, headers = binary_request(document, raws)
        data = json.loads(body[:int(headers[HEADER])])
        data["inputs"][index]["parameters"]["binary_data_size"] = draw(st.integers(-10 ** 20, -1)) \
            if mutation == "size negative" else draw(st.sampled_from([True, "12", 1.5, 2 ** 70, [], {}]))
        header = json.dumps(data).encode()
        return mutation, header + b"".join(raws), {HEADER: str(len(header))}
    if mutation == "shape mismatch":
        tensor["shape"] = [len(rows) + draw(st.integers(1, 5))]
    elif mutation == "truncated item":
        raws[BYTES_INPUT] = struct.pack("<I", 10 ** 6) + raws[BYTES_INPUT][4:]
    elif mutation in ("invalid utf-8", "lone surrogate"):
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\x80abc", b"\xe2\x82"])) if mutation == "invalid utf-8" \
            else draw(st.sampled_from([b"\xed\xa0\x80", b"\xed\xbf\xbf", b"a\xed\xb2\x80b"]))
        items = ["x"] * len(rows)
        items[draw(st.integers(0, len(rows) - 1))] = bad
        raws[BYTES_INPUT] = raw_bytes("BYTES", items)
    elif mutation == "uint64 beyond int64":
        cnt = FEATURES.index("cnt")
        document["inputs"][cnt]["datatype"] = "UINT64"
        values = [0] * len(rows)
        values[-1] = draw(st.integers(2 ** 63, 2 ** 64 - 1))
        raws[cnt] = raw_bytes("UINT64", values)
    elif mutation == "infinity":
        num = FEATURES.index("num")
        raws[num] = raw_bytes("FP64", [draw(st.sampled_from([math.inf, -math.inf]))] * len(rows))
    elif mutation == "bool byte":
        flag = FEATURES.index("flag")
        raws[flag] = bytes([draw(st.integers(2, 255))]) + raws[flag][1:]
    elif mutation == "trailing bytes":
        body, headers = binary_request(document, raws)
        return mutation, body + draw(st.binary(min_size=1, max_size=64)), headers
    elif mutation == "data and size":
        body, headers = binary_request(document, raws)
        data = json.loads(body[:int(headers[HEADER])])
        data["inputs"][index]["data"] = document["inputs"][index]["data"]
        header = json.dumps(data).encode()
        return mutation, header + b"".join(raws), {HEADER: str(len(header))}
    elif mutation == "huge shape":
        tensor["shape"] = draw(st.sampled_from([[10 ** 12], [2 ** 62, 2 ** 62], [10 ** 4, 10 ** 4], [10 ** 9, 0]]))
    elif mutation == "rows past AGSERVE_MAX_ROWS":  # the bytes are there: refused before they become a list
        flag = FEATURES.index("flag")
        rows_sent = draw(st.integers(10_001, 40_000))
        document["inputs"][flag]["shape"] = [rows_sent]
        raws[flag] = bytes(rows_sent)
    elif mutation == "binary_data_output not a bool":
        document["parameters"] = {"binary_data_output": draw(st.sampled_from(["yes", 1, None, [True]]))}
    elif mutation == "datatype without binary form":
        tensor["datatype"] = draw(st.sampled_from(["BF16", "STRING", "", "FP128"]))
    body, headers = binary_request(document, raws)
    length = int(headers[HEADER])
    header_value = {"header beyond body": str(len(body) + draw(st.integers(1, 10 ** 6))),
                    "header negative": str(-draw(st.integers(1, 10 ** 6))),
                    "header huge": str(draw(st.integers(10 ** 20, 10 ** 40))),
                    "header not a number": draw(st.sampled_from(["abc", "1e3", "0x10", "", "12.0", "+12", "1_0"])),
                    "header cuts the JSON": str(draw(st.integers(0, length - 1)))}.get(mutation)
    if header_value is not None:
        headers[HEADER] = header_value
    return mutation, body, headers


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_malformed_binary_bodies_are_refused_in_the_house_shape_naming_the_field(server, mutation):
    settings(PROPERTY, max_examples=12)(given(case=malformed(mutation), model=st.sampled_from(MODELS))(
        lambda case, model: check_refused(server, case, model)))()


def check_refused(server, case, model) -> None:
    mutation, body, headers = case
    started = time.monotonic()
    response = server.http.post(f"{server.base}/v2/models/{model}/infer", data=body,
                                headers={"Content-Type": "application/octet-stream", **headers}, timeout=30)
    assert 400 <= response.status_code < 500, (mutation, response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json"
    answer = response.json()
    assert set(answer) == SHAPE, (mutation, answer)
    details = answer["details"]
    if mutation == "header cuts the JSON":
        assert "reason" in details or "field" in details, (mutation, answer)
    elif mutation == "infinity":
        assert "num" in json.dumps(details["rows"]), (mutation, answer)  # the value rules name the feature
    elif mutation == "rows past AGSERVE_MAX_ROWS":
        assert details["field"].endswith(".shape") and details["max_rows"] == 10_000, (mutation, answer)
    else:
        assert "field" in details, (mutation, answer)
    assert time.monotonic() - started < 5, mutation  # generous: the shared machine; the cost test measures CPU


# --- refusals at the body limit cost little ---------------------------------------------------------------------------
def limit_bodies() -> dict[str, tuple[bytes, dict[str, str], str]]:
    """Refused bodies of up to 32 MiB, each with the key its refusal's details must hold."""
    rows = mixed_frame(n=1, seed=173)
    document, raws = valid_parts(rows)
    out = {}
    # A BYTES tensor of 10,000 items filling 32 MiB whose last item is not UTF-8: every length is read first.
    many = mixed_frame(n=10_000, seed=174)
    document_many, raws_many = valid_parts(many)
    fixed = sum(len(r) for i, r in enumerate(raws_many) if i != BYTES_INPUT)
    item = (LIMIT - fixed - 8192) // 10_000 - 4  # 8 KiB leaves room for the JSON header
    raws_many[BYTES_INPUT] = raw_bytes("BYTES", [b"x" * item] * 9_999 + [b"\xff" * item])
    out["BYTES items filling 32 MiB, the last not UTF-8"] = (*binary_request(document_many, raws_many), "field")
    # 32 MiB of FP64 whose shape says one value.
    raws_fp = list(raws)
    num = FEATURES.index("num")
    raws_fp[num] = b"\x00" * (LIMIT - 8192)
    out["32 MiB of FP64 for a shape of one"] = (*binary_request(document, raws_fp), "field")
    # A valid one-row request followed by 32 MiB no input claims.
    body, headers = binary_request(document, raws)
    out["32 MiB after the last input"] = (body + b"\x00" * (LIMIT - len(body)), headers, "field")
    # 50,000 empty binary inputs: refused by their count before any is decoded, as JSON inputs are.
    empty = {"name": "x", "datatype": "BOOL", "shape": [0], "parameters": {"binary_data_size": 0}}
    header = json.dumps({"inputs": [empty] * 50_000}).encode()
    out["50,000 empty binary inputs"] = (header, {HEADER: str(len(header))}, "max_columns")
    return out


def test_binary_refusals_at_the_body_limit_cost_little(server):
    (pid,) = server.worker_pids()
    url = f"{server.base}/v2/models/binary/infer"
    bodies = limit_bodies()
    for name, (body, headers, _) in bodies.items():  # the first of each warms up the code path and the allocator
        assert len(body) <= LIMIT, (name, len(body))
        server.http.post(url, data=body, headers=headers, timeout=30)
    costs = {}
    for name, (body, headers, key) in bodies.items():
        best = None
        for _ in range(3):  # the best of three: the machine is shared; a slow refusal fails all three
            cpu_before, rss_before = worker_cpu_and_rss(pid)
            response = server.http.post(url, data=body, headers=headers, timeout=30)
            cpu_after, rss_after = worker_cpu_and_rss(pid)
            assert response.status_code == 400 and set(response.json()) == SHAPE, (name, response.text[:300])
            assert key in response.json()["details"] and len(response.content) < 20_000, name
            cost = (round(cpu_after - cpu_before, 3), round(rss_after - rss_before, 1))
            best = cost if best is None else tuple(map(min, best, cost))
        costs[name] = best
    print(costs)
    assert all(cpu < 0.2 and rss < 20 for cpu, rss in costs.values()), costs
    assert server.worker_pids() == [pid]
