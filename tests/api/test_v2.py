"""The Open Inference Protocol (V2): NVIDIA's tritonclient against a real gunicorn, and the protocol's errors."""
from __future__ import annotations

import pytest

from app.api.v2 import proba_names
from tests.support.data import FEATURES, mixed_frame
from tests.support.servers import gunicorn
from tests.support.v2 import DATATYPES, tensors, v2_body


def test_tritonclient_against_gunicorn_equals_in_process_autogluon(repository_path, in_process):
    import tritonclient.http as triton

    rows = mixed_frame(n=12, seed=91)
    assert rows[FEATURES].isna().any().any()  # missing numbers and missing categories are part of the test
    with gunicorn(repository_path, AGSERVE_MODELS="multiclass") as server:
        client = triton.InferenceServerClient(url=server.base.removeprefix("http://"))
        headers = {"X-API-Key": server.key}
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("multiclass", headers=headers)
        metadata = client.get_model_metadata("multiclass", headers=headers)
        assert metadata["name"] == "multiclass" and metadata["versions"] == ["1"]
        assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == DATATYPES

        inputs = []
        for name, array in tensors(rows).items():
            tensor = triton.InferInput(name, list(array.shape), DATATYPES[name])
            tensor.set_data_from_numpy(array, binary_data=False)
            inputs.append(tensor)
        classes = [str(c) for c in in_process["multiclass"].class_labels]
        names = proba_names(classes)
        outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ["predictions", *names.values()]]
        result = client.infer("multiclass", inputs, outputs=outputs, request_id="req-7", headers=headers)

        expected = in_process["multiclass"].predict_proba(rows[FEATURES], as_multiclass=True)
        assert result.get_response()["id"] == "req-7"
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predictions")] == \
            [str(v) for v in in_process["multiclass"].predict(rows[FEATURES])]
        for label, output in names.items():
            assert result.as_numpy(output).tolist() == expected[label].tolist(), label

        # Only what is asked for comes back.
        only = client.infer("multiclass", inputs, outputs=[triton.InferRequestedOutput("predictions",
                                                                                        binary_data=False)],
                            headers=headers)
        assert [o["name"] for o in only.get_response()["outputs"]] == ["predictions"]


def test_v2_infer_through_the_test_client_all_problem_types(app, client, in_process):
    rows = mixed_frame(n=5, seed=92)
    for name in ("binary", "regression", "quantile"):
        answer = client.post(f"/v2/models/{name}/infer", json=v2_body(rows, id="x", parameters={"a": 1}))
        assert answer.status_code == 200, answer.json
        outputs = {o["name"]: o for o in answer.json["outputs"]}
        predictor = in_process[name]
        if name == "quantile":
            expected = predictor.predict(rows[FEATURES])
            assert outputs["predictions"]["shape"] == [5, 3]
            assert outputs["predictions"]["data"] == expected.to_numpy().ravel().tolist()
        elif name == "regression":
            assert outputs["predictions"]["data"] == predictor.predict(rows[FEATURES]).tolist()
        else:
            proba = predictor.predict_proba(rows[FEATURES], as_multiclass=True)
            assert outputs["proba_yes"]["data"] == proba["yes"].tolist()
        assert answer.json["id"] == "x" and answer.json["model_version"] == "1"


@pytest.mark.parametrize("mutate, status", [
    (lambda b: b["inputs"].pop(), 400),  # a feature missing
    (lambda b: b["inputs"].append({"name": "extra", "shape": [5], "datatype": "FP64", "data": [1] * 5}), 400),
    (lambda b: b["inputs"][0].update(shape=[4]), 400),  # shape and data disagree
    (lambda b: b["inputs"][0].update(datatype="BYTES"), 400),
    (lambda b: b["inputs"][2].update(data=[1, 2, 3, 4, 5]), 400),  # BYTES given numbers
    (lambda b: b.update(outputs=[{"name": "nope"}]), 400),
    (lambda b: b.update(inputs=[]), 400),
    (lambda b: b["inputs"][1].update(data=[1.5] * 5, datatype="FP64"), 400),  # not whole numbers for an integer
    (lambda b: b["inputs"][0].update(data=[[1.0]] * 5), 400),  # lists as the values of a [n] tensor (not [n, 1])
])
def test_v2_errors_use_the_protocol_statuses(client, mutate, status):
    body = v2_body(mixed_frame(n=5, seed=93))
    mutate(body)
    answer = client.post("/v2/models/binary/infer", json=body)
    assert answer.status_code == status, answer.json
    assert isinstance(answer.json["error"], str)


def test_v2_unknown_models_and_versions_are_404(client):
    body = v2_body(mixed_frame(n=1, seed=94))
    assert client.post("/v2/models/nope/infer", json=body).status_code == 404
    assert client.post("/v2/models/binary/versions/9/infer", json=body).status_code == 404
    assert client.post("/v2/models/binary/versions/1/infer", json=body).status_code == 200
    assert client.get("/v2/models/binary/versions/9/ready").status_code == 404


def test_v2_calls_share_the_cache_the_prediction_log_and_monitoring(repository_path, tmp_path):
    import json

    from app import metrics
    from tests.support.apps import build_app, client_with_key

    app = build_app(tmp_path / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path), MODELS="binary",
                    PREDICTION_LOG_DIR=str(tmp_path / "log"))
    client = client_with_key(app)
    body = v2_body(mixed_frame(n=3, seed=95))
    hits = metrics.CACHE_ROWS.labels("binary", "hit")._value.get()
    first = client.post("/v2/models/binary/infer", json=body)
    second = client.post("/v2/models/binary/infer", json=body)
    assert first.status_code == second.status_code == 200
    assert metrics.CACHE_ROWS.labels("binary", "hit")._value.get() == hits + 3  # the second call: all cached
    assert first.json["outputs"] == second.json["outputs"]

    logged = [json.loads(line) for path in sorted((tmp_path / "log").iterdir()) for line in path.read_text().splitlines()]
    assert [entry["request_id"] for entry in logged] == [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(entry["rows"] == 3 for entry in logged)
    assert app.extensions["agserve.monitor"].drift(app.extensions["agserve.models"].get("binary"))["rows"] == 6


def test_output_tensors_are_described_per_loaded_version_and_forgotten_with_it(app):
    """The described outputs are kept per model object: two models never share them, and a version dropped from
    memory leaves nothing behind."""
    import gc

    from app.api.v2 import _DESCRIBED, outputs_of
    from app.extensions import served_models

    with app.app_context():
        binary, multiclass = served_models().get("binary"), served_models().get("multiclass")

    class Replaced:  # a version swapped out: only the manifest and problem type are read
        manifest, problem_type = binary.manifest, "regression"

    replaced = Replaced()
    assert [o["name"] for o in outputs_of(replaced)] == ["predictions"]
    assert [o["name"] for o in outputs_of(binary)] == ["predictions", "proba_no", "proba_yes"]
    assert {o["name"] for o in outputs_of(multiclass)} - {"predictions"} == \
        {f"proba_{c}" for c in multiclass.manifest["class_labels"]}
    assert outputs_of(binary) is outputs_of(binary)  # described once
    del replaced
    gc.collect()
    assert all(not isinstance(model, Replaced) for model in _DESCRIBED.keys())
