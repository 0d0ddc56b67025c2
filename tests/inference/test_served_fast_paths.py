"""The served model's shortcuts around AutoGluon's per-call overhead give AutoGluon's own answers."""
from __future__ import annotations

from datetime import datetime
from functools import partial

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import load_settings
from app.inference import ModelRegistry, ModelRepository
from app.inference.forests import forests_in_turn
from app.inference.served import Prediction, rows_json
from app.frames import records
from app.inference.tables import _datetime_column, table_from_records
from app.threads import cap_estimator_jobs
from tests.support.data import FEATURES


@pytest.fixture(scope="module")
def served(repository_path):
    settings = load_settings(environ={}, overrides={"ENV": "testing", "BATCHING": False})
    registry = ModelRegistry(ModelRepository(repository_path), names=("binary", "multiclass", "regression", "quantile"),
                             default="binary")
    registry.refresh(settings)
    return registry


@pytest.mark.parametrize("name", ["binary", "multiclass"])
def test_labels_from_probabilities_equal_autogluon_predict(served, in_process, dataset, name):
    _, test = dataset
    model, frame = served.get(name), test[FEATURES]
    got = model.predict_frame(frame)
    assert got.predictions == in_process[name].predict(frame).tolist()


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "quantile"])
def test_few_rows_paths_give_autogluon_s_answers_row_by_row(served, in_process, dataset, monkeypatch, name):
    """Once loaded, the mixed-type models' feature pipeline takes a few validated rows' columns without a DataFrame,
    their LightGBM boosters read a matrix and AutoGluon's wrappers select by position; one row at a time and a few at once, the served answers are
    AutoGluon's own (unpatched, in-process, on the DataFrame of those rows) to the bit."""
    _, test = dataset
    facts = served.status()[name]
    assert {"DatetimeFeatureGenerator", "TextSpecialFeatureGenerator", "CategoryFeatureGenerator"} <= \
        set(facts["features_in_columns"])
    # a quantile model's LightGBM is AutoGluon's QuantileBooster (a booster per level), left as it is
    assert facts["boosters_reading_blocks"] == ([] if name == "quantile" else ["LightGBM"])
    assert facts["wrappers_by_position"] == ["ensemble inputs", "feature selection", "prediction order"]
    # weighted ensembles (the multiclass one also over a random forest, given the pipeline's frame); none for quantiles
    planned = ["LightGBM on its matrix", "weighted ensemble on arrays"]
    assert facts["array_plan"] == ([] if name == "quantile" else planned)
    model, frame = served.get(name), test[FEATURES]
    learner, trainer = model.predictor._learner, model.predictor._trainer
    bypassed, trained = learner.transform_features, trainer.predict_proba

    def transform_features(X):  # AutoGluon's own entry: a DataFrame built, then taken apart again
        raise AssertionError(f"{len(X)} rows reached the DataFrame path")

    def trainer_predict_proba(X, **kwargs):  # the models' frames, where the plan answers in arrays
        raise AssertionError(f"{len(X)} rows reached the trainer")

    unseen = frame.iloc[:2].copy()  # a colour never seen in training: no category (NaN codes for LightGBM)
    unseen.loc[unseen.index[0], "color"] = "purple"
    empty = pd.DataFrame({column: [None] for column in FEATURES})  # nothing at all: AutoGluon's own path
    for rows in [frame.iloc[i:i + 1] for i in range(40)] + [unseen.iloc[:1], unseen, empty] + \
            [frame.iloc[:16], frame.iloc[16:19], frame.iloc[:17]]:
        few = len(rows) <= 16 and rows is not empty
        rows = rows.reset_index(drop=True)
        table = table_from_records(records(rows), model.feature_names)
        monkeypatch.setattr(learner, "transform_features", transform_features if few else bypassed)
        planned = few and model.plan is not None
        monkeypatch.setattr(trainer, "predict_proba", trainer_predict_proba if planned else trained)
        got = model.predict_validated(model.validate_table(table), len(rows))
        if name in ("binary", "multiclass"):
            expected, ours = in_process[name].predict_proba(rows, as_multiclass=True), got.matrix
            assert got.columns == [str(c) for c in expected.columns]
            assert got.predictions == in_process[name].predict(rows).tolist()
        elif name == "quantile":
            expected = in_process[name].predict(rows)
            ours = np.array([[row[level] for level in got.columns] for row in got.predictions])
        else:
            expected, ours = in_process[name].predict(rows), np.array(got.predictions)
        assert ours.tobytes() == expected.to_numpy(dtype="float64").tobytes()


def test_a_plan_leaves_to_autogluon_what_does_more_than_its_arrays(repository_path, dataset):
    """A model left on disk (loaded on every call): no plan. A LightGBM model that rescales its answers (temperature
    scaling) gets the pipeline's frame and its own predict_proba, the ensemble above it still its arrays: AutoGluon's
    answers to the bit; a rescaling ensemble: no plan."""
    from autogluon.tabular import TabularPredictor

    from app.inference.ensembles import array_plan

    _, test = dataset
    rows = test[FEATURES].iloc[:5].reset_index(drop=True)
    predictor = TabularPredictor.load(str(ModelRepository(repository_path).get("multiclass", "1").predictor_path),
                                      verbosity=0)
    assert array_plan(predictor) is None
    predictor.persist()
    assert array_plan(predictor).taken == ["LightGBM on its matrix", "weighted ensemble on arrays"]
    lightgbm, ensemble = (predictor._trainer.models[name] for name in ("LightGBM", "WeightedEnsemble_L2"))
    lightgbm.temperature_scalar = 0.5
    plan = array_plan(predictor)
    assert plan.taken == ["weighted ensemble on arrays"]
    features = predictor.transform_features(rows)
    got = plan({name: features[name].values for name in features.columns}, len(rows))
    expected = predictor.predict_proba(rows, as_multiclass=True, as_pandas=False)
    assert got.tobytes() == expected.tobytes()
    lightgbm.temperature_scalar = None
    assert not np.array_equal(expected, predictor.predict_proba(rows, as_multiclass=True, as_pandas=False))
    ensemble.temperature_scalar = 0.5
    assert array_plan(predictor) is None


NUMERIC = ["num", "cnt", "flag"]  # forests with no categorical feature to label-encode read the plan's matrix


GBM, RF, XT = {"GBM": {"num_boost_round": 20}}, {"RF": {"n_estimators": 10}}, {"XT": {"n_estimators": 10}}


@pytest.mark.parametrize("problem_type, features, models, folds, taken", [
    ("multiclass", FEATURES, GBM | RF, 3, ["LightGBM on its matrix", "weighted ensemble on arrays"]),
    ("regression", FEATURES, GBM, 3, ["LightGBM on its matrix", "weighted ensemble on arrays"]),
    ("multiclass", NUMERIC, GBM | RF | XT, 0,
     ["LightGBM on its matrix", "forests on their matrix", "weighted ensemble on arrays"]),
    ("regression", NUMERIC, GBM | RF | XT, 2,
     ["LightGBM on its matrix", "forests on their matrix", "weighted ensemble on arrays"]),
])
def test_a_plan_answers_as_autogluon_over_bagged_models_and_forests(dataset, tmp_path, problem_type, features, models,
                                                                    folds, taken):
    """LightGBM, random forests and extra trees, bagged (AutoGluon's quality presets: each child reads the one matrix,
    averaged in their order) or not, forests with categorical features given the pipeline's frame, and the weighted
    ensemble over them: one row at a time and a few at once, the answers of AutoGluon's own calls to the bit."""
    from autogluon.tabular import TabularPredictor

    from app.inference.ensembles import array_plan

    train, test = dataset
    label = {"multiclass": "y_multiclass", "regression": "y_regression"}[problem_type]
    predictor = TabularPredictor(label=label, problem_type=problem_type, path=str(tmp_path), verbosity=0).fit(
        train[features + [label]], num_bag_folds=folds, num_cpus=1, hyperparameters=models)
    predictor.persist()
    cap_estimator_jobs(predictor, 1)
    assert predictor.model_best == "WeightedEnsemble_L2"
    bases = predictor._trainer.models["WeightedEnsemble_L2"].models[0].base_model_names
    if folds:  # (bagged forests have one child: AutoGluon takes their out-of-bag predictions)
        assert "LightGBM_BAG_L1" in bases and len(predictor._trainer.models["LightGBM_BAG_L1"].models) == folds
    frame = test[features].reset_index(drop=True)
    batches = [frame.iloc[i:i + 1].reset_index(drop=True) for i in range(15)] + [frame.iloc[:16]]
    call = predictor.predict if problem_type == "regression" else partial(predictor.predict_proba, as_multiclass=True)
    expected = [call(rows, as_pandas=False) for rows in batches]  # AutoGluon's own, before any of ours
    forests_in_turn(predictor)  # as a worker calls its forests
    plan = array_plan(predictor)
    assert plan.taken == taken
    for rows, want in zip(batches, expected):
        transformed = predictor.transform_features(rows)
        got = plan({name: transformed[name].values for name in transformed.columns}, len(rows))
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_labels_follow_a_calibrated_decision_threshold(served, dataset):
    """A binary predictor's decision threshold (calibrate_decision_threshold) decides labels, as in predict."""
    _, test = dataset
    model, frame = served.get("binary"), test[FEATURES]
    predictor = model.predictor
    positive = predictor.predict_proba(frame)[predictor.positive_class]
    threshold = float(positive.median())
    assert 0 < threshold < 1 and threshold != 0.5
    predictor.set_decision_threshold(threshold)
    try:
        got = model.predict_frame(frame).predictions
        assert got == predictor.predict(frame).tolist()
        assert got != predictor.predict(frame, decision_threshold=0.5).tolist(), "the threshold must matter here"
    finally:
        predictor.set_decision_threshold(0.5)


def test_scikit_learn_jobs_are_capped_without_changing_answers(repository_path, dataset):
    """A random forest fitted with n_jobs=-1 starts a joblib thread pool per call; capped, it answers the same."""
    from autogluon.tabular import TabularPredictor

    _, test = dataset
    predictor = TabularPredictor.load(str(ModelRepository(repository_path).get("multiclass", "1").predictor_path),
                                      verbosity=0)
    predictor.persist()
    forest = predictor._trainer.models["RandomForest"].model
    forest.n_jobs = -1  # as AutoGluon fits it by default: every core
    before = predictor.predict_proba(test[FEATURES])
    assert cap_estimator_jobs(predictor, 1) == ["RandomForest"]
    assert forest.n_jobs == 1
    assert predictor.predict_proba(test[FEATURES]).equals(before)
    assert cap_estimator_jobs(predictor, 1) == []  # already capped: nothing to change


@pytest.mark.parametrize("label, problem_type", [("y_multiclass", "multiclass"), ("y_regression", "regression")])
def test_forests_call_their_trees_in_turn_and_answer_the_same_to_the_bit(dataset, tmp_path, label, problem_type):
    """One-thread random forests and extra trees predict without joblib and without each tree checking again: the
    same answers, bit for bit, in bulk and row by row, and a one-row call takes well under scikit-learn's own."""
    import time

    from autogluon.tabular import TabularPredictor

    train, test = dataset
    predictor = TabularPredictor(label=label, problem_type=problem_type, path=str(tmp_path), verbosity=0).fit(
        train[FEATURES + [label]], hyperparameters={"RF": {"n_estimators": 40}, "XT": {"n_estimators": 40}},
        num_cpus=1)
    predictor.persist()
    cap_estimator_jobs(predictor, 1)
    rows = test[FEATURES]
    call = predictor.predict_proba if problem_type == "multiclass" else predictor.predict

    def answers() -> dict:
        return {name: [call(rows, model=name)] + [call(rows.iloc[i:i + 1], model=name) for i in range(10)]
                for name in predictor.model_names()}

    before = answers()
    assert forests_in_turn(predictor) == ["ExtraTrees", "RandomForest"]
    assert forests_in_turn(predictor) == []  # once is enough
    for name, answered in answers().items():
        assert all(a.equals(b) for a, b in zip(answered, before[name])), name

    model = predictor._trainer.models["RandomForest"]
    forest, method = model.model, "predict_proba" if problem_type == "multiclass" else "predict"
    one = model.preprocess(predictor.transform_features(rows.iloc[:1]))  # what AutoGluon hands the forest
    own, in_turn = [], []
    for _ in range(60):  # interleaved, so that a busy machine slows both alike
        started = time.perf_counter()
        getattr(type(forest), method)(forest, one)
        own.append(time.perf_counter() - started)
        started = time.perf_counter()
        getattr(forest, method)(one)
        in_turn.append(time.perf_counter() - started)
    assert np.median(in_turn) < 0.7 * np.median(own)  # 0.13–0.17 measured


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.none(), st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2250, 12, 31))),
                min_size=1, max_size=6),
       st.sampled_from(["T", " "]), st.sampled_from(["auto", "seconds", "minutes", "milliseconds", "microseconds"]))
def test_plain_date_times_parse_as_pandas_parses_them(moments, separator, timespec):
    """The numpy shortcut for plain ISO date-times gives what pandas' ISO8601 parser gives."""
    values = [None if m is None else m.isoformat(sep=separator, timespec=timespec) for m in moments]
    values[0] = values[0] and (values[0][:10] if timespec == "auto" and separator == " " else values[0])  # date only
    fast = _datetime_column(values)
    slow = pd.to_datetime(pd.Series(values, dtype="object"), format="ISO8601").to_numpy()
    assert fast.dtype == slow.dtype and ((fast == slow) | (np.isnat(fast) & np.isnat(slow))).all(), values


PROBABILITY = st.floats(allow_nan=True, allow_infinity=False) | st.sampled_from([0.0, -0.0, 1.0, 1e-300, 5e-324,
                                                                                   0.1 + 0.2, 1 / 3])
LABEL = st.text(max_size=6) | st.sampled_from(["setosa", "ünïcode", 'quo"te', "back\\slash", "new\nline", "1"])


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(LABEL, min_size=1, max_size=5, unique=True).flatmap(
    lambda labels: st.tuples(st.just(labels), st.lists(st.lists(PROBABILITY, min_size=len(labels),
                                                                max_size=len(labels)), max_size=30))))
def test_probabilities_written_from_the_matrix_are_the_json_of_the_row_objects(case):
    """The answer, the prediction log and monitoring write probabilities straight from the model's matrix: the bytes
    equal orjson's for the row objects (NaN as null, -0.0, the shortest round-trip digits, escaped labels)."""
    labels, rows = case
    matrix = np.array(rows, dtype="float64").reshape(len(rows), len(labels))
    objects = [dict(zip(labels, row)) for row in matrix.tolist()]
    assert rows_json(labels, matrix) == orjson.dumps(objects)
    prediction = Prediction(["x"] * len(rows), None, labels, matrix=matrix)
    assert orjson.dumps({"p": prediction.probabilities_json()}) == orjson.dumps({"p": objects})
    assert orjson.dumps(prediction.probabilities) == orjson.dumps(objects)  # built on demand for the others
    half = prediction.slice(len(rows) // 2, len(rows))
    assert orjson.dumps(half.probabilities_json()) == orjson.dumps(objects[len(rows) // 2:])
