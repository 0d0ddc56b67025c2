"""agserve.client against a real gunicorn: answers equal in-process AutoGluon, chunking, retries, typed errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import requests

from agserve.client import Client, NotFound, ValidationError
from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES, to_records
from tests.support import servers
from tests.support.servers import ROOT, eventually, gunicorn

pytestmark = pytest.mark.server


def expected_frame(predictor, frame: pd.DataFrame) -> pd.DataFrame:
    """AutoGluon's own answers in the client's layout."""
    if predictor.problem_type in ("binary", "multiclass"):
        proba = predictor.predict_proba(frame).astype("float64")
        out = pd.DataFrame({"prediction": predictor.predict(frame).tolist()}, index=frame.index)
        for name in proba.columns:
            out[f"proba_{name}"] = proba[name].to_numpy()
        return out
    result = predictor.predict(frame)
    if isinstance(result, pd.DataFrame):
        return pd.DataFrame({f"quantile_{c}": result[c].astype("float64").to_numpy() for c in result.columns},
                            index=frame.index)
    return pd.DataFrame({"prediction": result.astype("float64").to_numpy()}, index=frame.index)


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert list(got.index) == list(expected.index)
    for column in expected.columns:
        assert got[column].tolist() == expected[column].tolist(), column


@pytest.fixture(scope="module")
def server(repository_path):
    with gunicorn(repository_path, workers=2, AGSERVE_DEFAULT_MODEL="binary") as running:
        yield running


def test_importable_without_autogluon_or_flask():
    """The client runs where neither is installed: both (and the server's own package) are blocked here."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('autogluon', 'flask', 'app'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from agserve.client import Client, ValidationError\n"
        "Client('http://127.0.0.1:9', key='agk_x')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('autogluon', 'flask', 'app')]\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("csv_rows", [10_000, 0], ids=["json", "csv"])
def test_dataframe_in_dataframe_out_equals_autogluon(server, in_process, dataset, name, csv_rows):
    frame = dataset[1][FEATURES]
    frame.index = frame.index + 1000  # the caller's index comes back
    client = Client(server.base, key=server.key, csv_rows=csv_rows)

    got = client.predict(frame, model=name, version="1")

    assert_same(got, expected_frame(in_process[name], frame))
    assert got.attrs["model"] == name and got.attrs["version"] == "1"
    assert got.attrs["request_ids"] == client.last_request_ids and len(got.attrs["request_ids"]) == 1
    assert got.attrs["prediction_ids"] == [f"{client.last_request_ids[0]}:{i}" for i in range(len(frame))]


def test_records_and_the_default_model(server, in_process, dataset):
    frame = dataset[1][FEATURES].head(5).reset_index(drop=True)
    got = Client(server.base, key=server.key).predict(to_records(frame))
    assert_same(got, expected_frame(in_process["binary"], frame))


def test_a_frame_over_the_row_limit_is_chunked_and_equal(server, in_process, dataset):
    frame = pd.concat([dataset[1][FEATURES]] * 313, ignore_index=True).iloc[:25_000]
    raw = requests.post(f"{server.base}/models/multiclass/predict", headers={"X-API-Key": server.key,
                        "Content-Type": "application/json"}, data=json.dumps({"data": [{}] * 25_000}))
    assert raw.status_code == 413 and raw.json()["details"]["max_rows"] == 10_000  # the limit is real
    client = Client(server.base, key=server.key)

    got = client.predict(frame, model="multiclass")

    assert_same(got, expected_frame(in_process["multiclass"], frame))
    assert len(got.attrs["request_ids"]) == 3 and len(set(got.attrs["request_ids"])) == 3
    assert [a.status for a in client.history if a.path.endswith("/predict")] == [200, 200, 200]


def test_a_422_is_raised_at_once_with_the_servers_field_errors(server, dataset):
    rows = to_records(dataset[1][FEATURES].head(3))
    rows[1]["cnt"] = "many"
    client = Client(server.base, key=server.key)
    raw = requests.post(f"{server.base}/models/binary/predict", json={"data": rows},
                        headers={"X-API-Key": server.key}).json()

    with pytest.raises(ValidationError) as raised:
        client.predict(rows, model="binary")

    assert raised.value.status == 422 and raised.value.details == raw["details"]
    assert "cnt" in raised.value.details["rows"]["1"]
    assert raised.value.request_id == client.history[-1].request_id
    assert [a.status for a in client.history if a.path.endswith("/predict")] == [422]  # never retried
    with pytest.raises(NotFound):
        client.predict(rows, model="no-such-model")
    assert client.history[-1].status == 404 and sum(a.status == 404 for a in client.history) == 2  # info, predict


def test_feedback_schema_and_info(server, dataset):
    client = Client(server.base, key=server.key)
    rows = dataset[1].head(4)
    got = client.predict(rows[FEATURES], model="binary")
    assert client.feedback(got.attrs["prediction_ids"], rows["y_binary"].tolist()) == 4
    assert client.info("binary")["limits"]["max_rows"] == 10_000
    assert set(client.schema("binary")["row"]["properties"]) == set(FEATURES)
    with pytest.raises(NotFound) as raised:
        client.feedback("0123456789abcdef0123456789abcdef:0", "yes")
    assert "items" in raised.value.details


def test_429_with_retry_after_is_waited_and_retried(repository_path, in_process, dataset):
    frame = dataset[1][FEATURES].head(2)
    with gunicorn(repository_path, workers=1, AGSERVE_RATE_LIMIT_PREDICT="2/2s") as limited:
        client = Client(limited.base, key=limited.key)
        answers = [client.predict(frame, model="binary") for _ in range(5)]

    for got in answers:
        assert_same(got, expected_frame(in_process["binary"], frame))
    attempts = [a for a in client.history if a.path.endswith("/predict")]
    refused = [i for i, a in enumerate(attempts) if a.status == 429]
    assert refused, "the rate limit never answered 429"
    for i in refused:
        assert attempts[i].retry_after and attempts[i].retry_after > 0
        waited = attempts[i + 1].started - (attempts[i].started + attempts[i].seconds)
        assert waited >= attempts[i].retry_after - 0.01
    assert sum(a.status == 200 for a in attempts) == 5


def test_a_server_restarting_mid_call_costs_no_failed_call(repository_path, in_process, dataset):
    frame = pd.concat([dataset[1][FEATURES]] * 40, ignore_index=True)  # 3,200 rows: 32 chunks of 100
    errors: list[BaseException] = []
    results: list[pd.DataFrame] = []
    with gunicorn(repository_path, workers=2, AGSERVE_MAX_ROWS="100") as running:
        client = Client(running.base, key=running.key)
        before = running.worker_pids()

        def call():
            try:
                results.append(client.predict(frame, model="regression"))
            except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        assert eventually(lambda: sum(a.status == 200 for a in client.history) >= 2, timeout=30)
        hup_at = time.monotonic()
        os.kill(running.process.pid, signal.SIGHUP)
        caller.join(120)
        assert not caller.is_alive()
        assert eventually(lambda: not set(running.worker_pids()) & set(before), timeout=30)

    assert not errors, errors
    assert_same(results[0], expected_frame(in_process["regression"], frame))
    assert len(results[0].attrs["request_ids"]) == 32
    assert any(a.started > hup_at for a in client.history), "the call ended before the restart"


def test_connection_refused_is_retried_until_the_server_is_up(repository_path, in_process, dataset, monkeypatch):
    frame = dataset[1][FEATURES].head(3)
    port = servers.free_port()
    monkeypatch.setattr(servers, "free_port", lambda: port)  # the server comes up where the client already calls
    client = Client(f"http://127.0.0.1:{port}", key="agk_placeholder", retries=30, max_backoff=1.0)
    results: list[pd.DataFrame] = []
    caller = threading.Thread(target=lambda: results.append(client.predict(frame, model="binary")))
    caller.start()
    assert eventually(lambda: sum(a.error == "ConnectionError" for a in client.history) >= 2, timeout=10)
    with gunicorn(repository_path, workers=1, wait_ready=False) as running:
        client.session.headers["X-API-Key"] = running.key  # the key only exists once the server's database does
        caller.join(90)

    assert results, [a for a in client.history][-3:]
    assert_same(results[0], expected_frame(in_process["binary"], frame))
    assert client.history[-1].status == 200


def test_the_documented_example_runs(server):
    done = subprocess.run([sys.executable, "examples/client.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "AGSERVE_URL": server.base, "AGSERVE_KEY": server.key})
    assert done.returncode == 0, done.stderr
    assert "binary version 1: at most 10000 rows per request" in done.stdout
    assert "outcomes stored: 3" in done.stdout and "\n422 input rows do not match" in done.stdout, done.stdout


def test_explain_is_chunked_at_the_explanation_row_limit_and_adds_up(server, in_process, dataset):
    rows = dataset[1][FEATURES].head(3)
    client = Client(server.base, key=server.key)
    client.info("binary")
    client._limits["binary"]["explain_max_rows"] = 2  # as if the server said 2: three rows take two requests

    answer = client.explain(rows, model="binary")

    assert len(answer["request_ids"]) == 2 and answer["request_ids"] == client.last_request_ids
    assert [row["prediction"] for row in answer["explanations"]] == in_process["binary"].predict(rows).tolist()
    for row in answer["explanations"]:
        for explanation in row["explanations"]:
            total = explanation["base_value"] + sum(c["contribution"] for c in explanation["contributions"])
            assert total == pytest.approx(explanation["output_value"], abs=1e-6)
