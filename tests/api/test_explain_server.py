"""Explanations through a real gunicorn: exact additivity on 200 mixed-type rows for every problem type, compared
with in-process AutoGluon; the same answer from both workers; the cache; the SVG waterfall in headless Chromium."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.apps import PROBLEMS
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.servers import ROOT, gunicorn
from tests.support.browser import chromium

ADDITIVITY = 1e-6


@pytest.fixture(scope="module")
def server(repository_path):
    with gunicorn(repository_path, workers=2, AGSERVE_EXPLAIN_MAX_ROWS="200", AGSERVE_EXPLAIN_PERMUTATIONS="2",
                  AGSERVE_DEFAULT_MODEL="binary") as running:
        yield running


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """200 fresh rows of the mixed-type set: numeric, integer, category, boolean, date-time, text, with gaps."""
    frame = mixed_frame(200, seed=11)[FEATURES]
    assert (frame.isna().sum() > 0).sum() >= 4
    return frame


def in_process_outputs(predictor, frame: pd.DataFrame) -> tuple[list, pd.DataFrame]:
    """AutoGluon's own labels (or values) and its outputs, one column per class, quantile level, or the value."""
    if predictor.problem_type in ("binary", "multiclass"):
        proba = predictor.predict_proba(frame).astype("float64")
        proba.columns = [str(c) for c in proba.columns]
        return predictor.predict(frame).tolist(), proba
    result = predictor.predict(frame)
    outputs = result.astype("float64") if isinstance(result, pd.DataFrame) else result.astype("float64").to_frame()
    outputs.columns = [str(c) for c in outputs.columns] if isinstance(result, pd.DataFrame) else ["None"]
    return None, outputs


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_contributions_add_up_to_autogluon_output_on_200_rows(server, in_process, rows, name):
    def explain(start: int) -> list:  # two at once: within the two explanation slots even of one worker
        answer = server.session().post(f"{server.base}/models/{name}/explain?classes=all",
                                       json={"data": to_records(rows.iloc[start:start + 100])}, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()["explanations"]

    with ThreadPoolExecutor(2) as pool:
        explained = [row for part in pool.map(explain, (0, 100)) for row in part]
    labels, outputs = in_process_outputs(in_process[name], rows)
    assert len(explained) == 200
    for i, row in enumerate(explained):
        if labels is not None:
            assert row["prediction"] == labels[i]
        assert {str(e["output"]) for e in row["explanations"]} == set(outputs.columns)
        for explanation in row["explanations"]:
            assert [c["feature"] for c in sorted(explanation["contributions"], key=lambda c: c["feature"])] \
                == sorted(FEATURES)
            total = explanation["base_value"] + math.fsum(c["contribution"] for c in explanation["contributions"])
            expected = outputs.iloc[i][str(explanation["output"])]
            assert abs(total - expected) < ADDITIVITY, (i, explanation["output"], total, expected)
            assert abs(explanation["output_value"] - expected) < ADDITIVITY


def test_the_predicted_class_is_explained_by_default(server, rows):
    answer = server.session().post(f"{server.base}/explain", json={"data": to_records(rows.head(3))}, timeout=60)
    for row in answer.json()["explanations"]:
        assert [e["output"] for e in row["explanations"]] == [str(row["prediction"])]


def worker_answer(server, pid: int, frame: pd.DataFrame) -> tuple[list, int]:
    """The explanations one worker gives, and that worker's count of model calls after answering."""
    with server.only_worker(pid):
        http = server.session()
        body = http.post(f"{server.base}/models/multiclass/explain", json={"data": to_records(frame)}, timeout=60)
        assert body.status_code == 200, body.text
        status = http.get(f"{server.base}/admin/status", timeout=10).json()
    return body.json()["explanations"], status["models"]["multiclass"]["batching"]["batches"]


def test_same_answer_from_both_workers_and_again_from_the_cache(server):
    unseen = mixed_frame(4, seed=12)[FEATURES]  # rows no other test explained, so no worker has them cached
    frame = unseen.iloc[0:3]
    first_pid, second_pid = server.worker_pids()
    first, calls = worker_answer(server, first_pid, frame)
    other, _ = worker_answer(server, second_pid, frame)  # its own cache is empty: computed afresh, same seed
    assert other == first
    again, calls_after = worker_answer(server, first_pid, frame)
    assert again == first and calls_after == calls  # answered from the cache: no model call
    _, calls_fresh = worker_answer(server, first_pid, unseen.iloc[3:4])
    assert calls_fresh > calls  # a new row does call the model, so the count above could have moved


def test_svg_waterfall_names_every_feature_and_renders_in_chromium(server, rows, tmp_path):
    row = to_records(rows.iloc[[5]])
    answer = server.session().post(f"{server.base}/models/regression/explain", json={"data": row},
                                   headers={"Accept": "image/svg+xml"}, timeout=60)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/svg+xml")
    tree = ET.fromstring(answer.content)
    texts = " ".join("".join(node.itertext()) for node in tree.iter("{http://www.w3.org/2000/svg}text"))
    for feature in FEATURES:
        assert f"{feature} = " in texts
    assert "base value" in texts and "output" in texts

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    svg, shot = artifacts / "explain-waterfall.svg", artifacts / "explain-waterfall.png"
    svg.write_bytes(answer.content)
    shot.unlink(missing_ok=True)
    result = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=800,400", svg.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 10  # bars and text were drawn, not a blank page

    many = server.session().post(f"{server.base}/explain", json={"data": to_records(rows.head(2))},
                                 headers={"Accept": "image/svg+xml"}, timeout=60)
    assert many.status_code == 422


# --- ?top and ?classes over their value space ------------------------------------------------------------------------
TOP_MAX = 10_000  # the documented bound: an integer from 1 to 10000


def top_accepted(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= TOP_MAX


QUERY_TEXT = st.one_of(
    st.integers(-3, 12).map(str), st.integers(TOP_MAX - 2, TOP_MAX + 2).map(str),
    st.text(alphabet="0123456789", min_size=1, max_size=6000),  # beyond int()'s 4,300-digit limit
    st.text(alphabet="0123456789²³١٢߁٣ +-_. e\u00a0", min_size=0, max_size=8),  # Unicode digits, signs, spaces
    st.text(max_size=12), st.sampled_from(["predicted", "all", "ALL", "all ", "", "\x00"]))


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(top=st.none() | QUERY_TEXT, classes=st.none() | QUERY_TEXT)
def test_top_and_classes_over_their_value_space(server, in_process, rows, top, classes):
    """Any ?top and ?classes answer 200 when the documented rules accept them (and the numbers still add up) or a
    422 in the house shape naming the parameter; never a 5xx."""
    params = {key: value for key, value in (("top", top), ("classes", classes)) if value is not None}
    answer = server.session().post(f"{server.base}/models/multiclass/explain", params=params,
                                   json={"data": to_records(rows.iloc[[7]])}, timeout=60)
    top_ok = top is None or top_accepted(top)
    classes_ok = classes in (None, "predicted", "all")
    if not (top_ok and classes_ok):
        assert answer.status_code == 422, (answer.status_code, answer.text[:300], params)
        body = answer.json()
        assert set(body) == {"error", "details", "request_id"}
        assert set(body["details"]) <= {"top", "classes"} and body["details"], body
        return
    assert answer.status_code == 200, (answer.text[:300], params)
    (row,) = answer.json()["explanations"]
    assert len(row["explanations"]) == (len(in_process["multiclass"].class_labels) if classes == "all" else 1)
    for explanation in row["explanations"]:
        kept = explanation["contributions"]
        rest = explanation.get("rest", {"features": 0, "contribution": 0.0})
        assert len(kept) == (min(int(top), len(FEATURES)) if top is not None else len(FEATURES))
        assert len(kept) + rest["features"] == len(FEATURES)
        total = explanation["base_value"] + math.fsum(c["contribution"] for c in kept) + rest["contribution"]
        assert abs(total - explanation["output_value"]) < ADDITIVITY
