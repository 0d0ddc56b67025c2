"""Explanations against ground truth, in-process: a model that uses two features only, and a linear model whose
Shapley values are known in closed form; the background sample, its checksum, and the request limits."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from app.inference import ModelLoadError, ModelRepository
from app.extensions import data_plane
from app.inference.explain import BACKGROUND_FILE, _mix
from app.inference.tables import frame_from_columns, merge_columns
from tests.support.apps import build_app, client_with_key

NOISE = ["c", "d", "e", "k"]
ADDITIVITY = 1e-6


def two_feature_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.uniform(-1, 1, n) for name in ("a", "b", "c", "d", "e")})
    frame["k"] = rng.choice(["red", "green", "blue"], n)
    frame["y"] = 3 * frame["a"] + 2 * frame["b"]  # nothing else matters
    return frame


def linear_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=n) for name in ("a", "b", "c", "d")})  # unskewed: only scaled
    frame["y"] = 2 * frame["a"] - frame["b"] + 0.5 * frame["c"] + rng.normal(scale=0.1, size=n)
    return frame


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A repository with the two-feature model, the linear model, and a version imported without reference data."""
    from autogluon.tabular import TabularPredictor

    root = tmp_path_factory.mktemp("explain")
    repository = ModelRepository(root / "models")
    two, linear = two_feature_frame(400, 0), linear_frame(300, 1)
    TabularPredictor(label="y", problem_type="regression", path=str(root / "two"), verbosity=0).fit(
        two, hyperparameters={"GBM": {"num_boost_round": 200}}, num_cpus=1)
    TabularPredictor(label="y", problem_type="regression", path=str(root / "linear"), verbosity=0).fit(
        linear, hyperparameters={"LR": {}}, num_cpus=1, fit_weighted_ensemble=False)
    repository.import_predictor(root / "two", "two", reference=two_feature_frame(200, 1))
    repository.import_predictor(root / "linear", "linear", reference=linear_frame(200, 2))
    repository.import_predictor(root / "two", "bare")  # no reference data: no background
    for name in ("two", "linear", "bare"):
        repository.activate(name, "1")
    return repository


@pytest.fixture(scope="module")
def app(synthetic, tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("auth") / "auth.sqlite3", MODEL_REPOSITORY=str(synthetic.root),
                     DEFAULT_MODEL="two", RATE_LIMIT_EXPLAIN="3/minute", EXPLAIN_CONCURRENCY=1)


def explain(client, name, rows, **params):
    answer = client.post(f"/models/{name}/explain", json={"data": rows}, query_string=params)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["explanations"]


def contributions(explanation) -> dict[str, float]:
    return {item["feature"]: item["contribution"] for item in explanation["contributions"]}


def test_a_model_of_two_features_gives_the_others_nothing(app):
    """Tolerance: on average over 20 rows, each other feature gets under 2 % of the weight a and b carry."""
    rows = two_feature_frame(20, 7).drop(columns="y").to_dict("records")
    answers = explain(client_with_key(app), "two", rows)
    weights = pd.DataFrame([contributions(row["explanations"][0]) for row in answers]).abs().mean()
    carried = weights["a"] + weights["b"]
    assert carried > 1.0  # y = 3a + 2b with a, b uniform on [-1, 1]: the two move the output a lot
    for name in NOISE:
        assert weights[name] < 0.02 * carried, (name, weights.to_dict())
    assert weights["a"] > weights["b"]  # 3a weighs more than 2b
    for row in answers:
        explanation = row["explanations"][0]
        assert abs(explanation["base_value"] + math.fsum(contributions(explanation).values())
                   - explanation["output_value"]) < ADDITIVITY


def test_a_linear_model_gets_each_term_minus_its_background_mean(app, synthetic):
    """AutoGluon's LR model imputes (median), standardises and fits Ridge: additive, so each feature's Shapley value
    is its term w·(x − μ)/σ minus that term's mean over the background sample, for any sampled permutations."""
    from autogluon.tabular import TabularPredictor

    version = synthetic.get("linear")
    predictor = TabularPredictor.load(str(version.predictor_path), verbosity=0)
    model = predictor._trainer.load_model(predictor.model_best)
    assert type(model).__name__ == "LinearModel"
    ((_, steps, names),) = model._pipeline.transformers_  # one continuous block: SimpleImputer → StandardScaler
    imputer, scaler = steps.named_steps["imputer"], steps.named_steps["scaler"]
    weights = dict(zip(names, model.model.coef_ / scaler.scale_))

    def terms(frame: pd.DataFrame) -> pd.DataFrame:
        filled = pd.DataFrame(imputer.transform(frame[names]), columns=names)
        return pd.DataFrame({n: weights[n] * (filled[n] - scaler.mean_[i]) for i, n in enumerate(names)})

    background = pd.DataFrame(json.loads((version.path / BACKGROUND_FILE).read_text()))
    centre = terms(background).mean()
    rows = linear_frame(20, 9).drop(columns="y")
    rows.loc[3, "a"] = rows.loc[5, "c"] = np.nan  # missing values take the imputer's median
    expected = terms(rows) - centre
    answers = explain(client_with_key(app), "linear", [{k: (None if pd.isna(v) else v) for k, v in r.items()}
                                                       for r in rows.to_dict("records")])
    in_process = predictor.predict(rows).to_numpy()
    for i, row in enumerate(answers):
        got = contributions(row["explanations"][0])
        for name in names:
            assert got[name] == pytest.approx(expected.loc[i, name], abs=1e-6), (i, name)
        assert row["explanations"][0]["output_value"] == pytest.approx(in_process[i], abs=1e-6)


def test_top_k_keeps_the_largest_and_sums_the_rest(app):
    row = two_feature_frame(1, 3).drop(columns="y").to_dict("records")
    client = client_with_key(app)
    full = explain(client, "two", row)[0]["explanations"][0]
    top = explain(client, "two", row, top=2)[0]["explanations"][0]
    magnitudes = sorted((abs(c) for c in contributions(full).values()), reverse=True)
    assert [abs(c["contribution"]) for c in top["contributions"]] == magnitudes[:2]
    assert top["rest"]["features"] == 4
    assert top["rest"]["contribution"] == pytest.approx(sum(contributions(full).values())
                                                        - sum(contributions(top).values()), abs=1e-12)
    assert abs(top["base_value"] + sum(contributions(top).values()) + top["rest"]["contribution"]
               - top["output_value"]) < ADDITIVITY


def test_a_version_without_background_answers_409_saying_how_to_add_one(app, synthetic, tmp_path):
    client = client_with_key(app)
    row = two_feature_frame(1, 3).drop(columns="y").to_dict("records")
    answer = client.post("/models/bare/explain", json={"data": row})
    assert answer.status_code == 409
    assert "agserve models background bare 1 --data" in answer.get_json()["error"]
    assert client.post("/models/bare/predict", json={"data": row}).status_code == 200  # predictions unaffected

    reference = tmp_path / "reference.csv"
    two_feature_frame(100, 4).to_csv(reference, index=False)
    result = app.test_cli_runner().invoke(args=["models", "background", "bare", "1", "--data", str(reference)])
    assert result.exit_code == 0, result.output
    entry = synthetic.get("bare", "1").manifest()["background"]
    assert entry["rows"] == 50 and entry["file"] == BACKGROUND_FILE


def test_background_is_a_stratified_sample_pinned_by_its_checksum(synthetic, tmp_path):
    from app.inference.explain import sample_background
    from app.inference.loading import load

    reference = two_feature_frame(500, 5)
    reference["cls"] = np.where(reference["a"] > 0.6, "rare", "common")  # 20 % rare
    sample = sample_background(reference, ["a", "b"], "cls", "binary", rows=50)
    shares = reference.loc[sample.index, "cls"].value_counts()
    assert len(sample) == 50 and shares["rare"] == pytest.approx(50 * (reference["cls"] == "rare").mean(), abs=1)

    version = synthetic.get("two")
    settings = build_app(tmp_path / "a.sqlite3", MODEL_REPOSITORY=str(synthetic.root), LOAD_MODELS_ON_START=False,
                         BATCHING=False).config
    assert load(version, settings)[0].background is not None
    original = (version.path / BACKGROUND_FILE).read_bytes()
    try:
        (version.path / BACKGROUND_FILE).write_bytes(original.replace(b'"a":', b'"a" :', 1))
        with pytest.raises(ModelLoadError, match="integrity"):
            load(version, settings)
    finally:
        (version.path / BACKGROUND_FILE).write_bytes(original)


def test_explain_scope_rate_limit_and_concurrency_limit(app):
    row = two_feature_frame(1, 3).drop(columns="y").to_dict("records")
    predict_only = client_with_key(app, ("predict",))
    assert predict_only.post("/explain", json={"data": row}).status_code == 403
    assert predict_only.post("/predict", json={"data": row}).status_code == 200

    client = client_with_key(app, ("explain",))
    slots = data_plane(app).explain_slots
    slots.acquire()  # EXPLAIN_CONCURRENCY=1: one explanation already running in this worker
    try:
        busy = client.post("/explain", json={"data": row})
    finally:
        slots.release()
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert [client.post("/explain", json={"data": row}).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/explain", json={"data": row})  # the fourth call of 3/minute
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0


def test_bad_options_get_422(app):
    client = client_with_key(app)
    row = two_feature_frame(1, 3).drop(columns="y").to_dict("records")
    for query in ({"classes": "some"}, {"top": "0"}, {"top": "x"}):
        answer = client.post("/models/linear/explain", json={"data": row}, query_string=query)
        assert answer.status_code == 422 and answer.get_json()["details"]


def test_split_and_csv_bodies_get_the_records_answer_and_the_row_limit_holds(app):
    frame = two_feature_frame(2, 6).drop(columns="y").round(6)  # numbers CSV text carries exactly
    records = explain(client_with_key(app), "two", frame.to_dict("records"))
    split = client_with_key(app).post("/models/two/explain", json={"data": {
        "columns": list(frame.columns), "data": frame.to_numpy().tolist()}})
    csv = client_with_key(app).post("/models/two/explain", data=frame.to_csv(index=False).encode(),
                                    content_type="text/csv")
    assert split.get_json()["explanations"] == records
    assert csv.get_json()["explanations"] == records
    limit = app.config["EXPLAIN_MAX_ROWS"]
    too_many = client_with_key(app).post("/models/two/explain",
                                         json={"data": two_feature_frame(limit + 1, 6).drop(columns="y")
                                               .to_dict("records")})
    assert too_many.status_code == 413 and too_many.get_json()["details"]["max_rows"] == limit


@pytest.mark.parametrize("count", [2 ** 63 - 1, -(2 ** 63), 2 ** 53 + 1])
def test_masked_rows_keep_a_rows_int64_extremes_exact(count):
    """Found by schemathesis once the JSON Schema stated int64's range: the row's 2**63 - 1 went into the
    background's float64 array, became 2**63, and the model frame failed to hold it (a 500 from POST /explain)."""
    background = np.array([3.0, np.nan, 4.0])
    mixed = _mix(count, background, np.array([True, False, False, False, True, False]))
    frame = frame_from_columns(merge_columns([{"cnt": [count]}, {"cnt": mixed}], {"cnt": "integer"}),
                               {"cnt": "integer"})
    assert [None if v is pd.NA else v for v in frame["cnt"].tolist()] == [count, count, None, 4, 3, count, 4]


def test_masked_rows_go_to_the_batcher_as_deferrable_chunks_and_the_chunk_size_does_not_change_the_answer(
        app, monkeypatch):
    """Every masked chunk is deferrable work (it yields to predictions) of at most AGSERVE_EXPLAIN_CHUNK_ROWS rows,
    and small chunks give exactly the answer one large call does."""
    from app.extensions import served_models
    from app.inference.explain import explain_table
    from app.inference.tables import table_from_records

    model = served_models(app).get("two")
    table = table_from_records(two_feature_frame(2, 9).drop(columns="y").to_dict("records"), model.feature_names)
    whole = explain_table(model, table, 10)
    tickets, calls = [], []
    ticket, predict = model.batcher.ticket, model.batcher._predict
    monkeypatch.setattr(model.batcher, "ticket", lambda deferrable=False: tickets.append(deferrable) or
                        ticket(deferrable))
    monkeypatch.setattr(model.batcher, "_predict", lambda parts, counts: calls.append(counts) or predict(parts, counts))
    monkeypatch.setattr(model, "explain_chunk_rows", 100)
    chunked = explain_table(model, table, 10)
    assert chunked == whole
    rows = 2 + 50 + 2 * 10 * 5 * 50  # the rows, the background, each row's permutations × steps × background
    assert len(tickets) == math.ceil(rows / 100) and all(tickets)
    assert sum(map(sum, calls)) == rows and max(map(sum, calls)) <= 100
    for explanation in chunked:
        assert abs(explanation["base"][0] + sum(c[0] for c in explanation["contributions"]) - explanation["value"][0]) \
            < ADDITIVITY
