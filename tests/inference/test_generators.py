"""AutoGluon's feature pipeline on a few rows in columns (app/inference/generators.py) gives AutoGluon's frame."""
from __future__ import annotations

import copy
from datetime import datetime
from functools import partial

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.generators import FEW_ROWS, _few_rows, pipeline_in_columns

SYMBOLS = "!?@%$*&#^.:/;-= \t\n"
WORDS = ["Fast", "slow", "CHEAP", "n0te", "x9", "ÉTÉ", "naïve", "a_b", "", "42", "日本", "e-mail", "C++", "50%"]
COLORS = ["red", "green", "blue", "Black", "", "0"]


def training_frame(n: int = 400) -> pd.DataFrame:
    """Every feature kind: text with every symbol, capitals and digits often enough that AutoGluon keeps them,
    datetimes, categories and text with missing values, booleans, integers, floats."""
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(WORDS) + rng.choice(list(SYMBOLS)) for _ in range(rng.integers(3, 9)))
            for _ in range(n)]
    text[::17] = [None] * len(text[::17])
    title = [" ".join(rng.choice(WORDS[::-1], 4)) for _ in range(n)]
    when = pd.Series(pd.Timestamp("1990-01-01") + pd.to_timedelta(rng.integers(-30_000, 30_000, n), unit="D")
                     + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"))
    when[rng.random(n) < 0.1] = pd.NaT
    color = rng.choice(COLORS, n).astype(object)
    color[rng.random(n) < 0.1] = None
    return pd.DataFrame({"x": rng.normal(size=n), "cnt": rng.integers(-5, 50, n), "flag": rng.random(n) < 0.3,
                         "color": color, "when": when, "note": text, "title": title})


@pytest.fixture(scope="module")
def pipelines():
    """A fitted AutoML feature pipeline as AutoGluon has it, and a copy given the few-rows path."""
    from autogluon.features.generators import AutoMLPipelineFeatureGenerator

    own = AutoMLPipelineFeatureGenerator(text_ngram_params={"prefilter_tokens": True, "prefilter_token_count": 12},
                                         verbosity=0)
    frame = training_frame()
    own.fit_transform(frame, y=frame["x"] + frame["note"].str.len().fillna(0), problem_type="regression")
    fast = copy.deepcopy(own)
    in_columns = pipeline_in_columns(fast)
    assert {"AsTypeFeatureGenerator", "FillNaFeatureGenerator", "CategoryFeatureGenerator", "DatetimeFeatureGenerator",
            "TextSpecialFeatureGenerator", "BinnedFeatureGenerator", "TextNgramFeatureGenerator"} <= set(in_columns)
    text_special = next(g for stage in fast.generators for g in stage if type(g).__name__.startswith("TextSpecial"))
    assert len(text_special._symbols_per_feature["note"]) >= 10, "the data should keep most symbols"
    ngrams = next(g for stage in fast.generators for g in stage if type(g).__name__.startswith("TextNgram"))
    assert ngrams.prefilter_tokens and ngrams.features_in == ["note", "title"], "two texts joined, tokens chosen"
    return own, fast


TEXT = st.one_of(st.none(), st.text(st.sampled_from(SYMBOLS + "aZ09_é日\u00a0\u2003\x0b")),
                 st.text(st.characters(codec=None, categories=None)), st.sampled_from(WORDS))
WHEN = st.one_of(st.none(), st.datetimes(datetime(1677, 9, 23), datetime(2262, 4, 10)),
                 st.datetimes(datetime(1969, 12, 31), datetime(1970, 1, 2)))
ROW = st.tuples(st.one_of(st.none(), st.floats()), st.integers(-2 ** 63, 2 ** 63 - 1), st.booleans(),
                st.one_of(st.none(), st.sampled_from(COLORS), st.text(max_size=3)), WHEN, TEXT, TEXT)


def frame_of(rows, flags_as_objects: bool) -> pd.DataFrame:
    """The rows as our tables build them: float64 with NaN, int64, bool (or objects), objects, datetime64[ns]."""
    x, cnt, flag, color, when, note, title = zip(*rows)
    return pd.DataFrame({"x": np.array([np.nan if v is None else v for v in x], dtype="float64"),
                         "cnt": np.array(cnt, dtype="int64"),
                         "flag": np.array(flag, dtype=object if flags_as_objects else bool),
                         "color": np.array(color, dtype=object), "when": np.array(when, dtype="datetime64[ns]"),
                         "note": np.array(note, dtype=object), "title": np.array(title, dtype=object)})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(ROW, min_size=1, max_size=FEW_ROWS + 4), st.booleans())
def test_a_few_rows_transform_to_autogluon_s_frame(pipelines, rows, flags_as_objects):
    """Any values of every kind (NaN, ±inf, the ends of int64 and of pandas' datetimes, dates before 1970, unseen
    and missing categories, empty text, whitespace of every kind, symbols, non-ASCII, lone surrogates): the same
    columns, dtypes and values as AutoGluon's own transform."""
    own, fast = pipelines
    X = frame_of(rows, flags_as_objects)
    expected = own.transform(X.copy())
    got = fast.transform(X.copy())
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_what_a_column_path_cannot_vouch_for_goes_to_autogluon(pipelines, monkeypatch):
    """More than FEW_ROWS rows, a nullable-integer column, datetimes as text, text that is not str: AutoGluon's
    own transform answers (and the answer is its answer); a plain row does not reach it."""
    own, fast = pipelines
    slow = []
    real = fast.transform.args[1]
    monkeypatch.setattr(fast, "transform", partial(_few_rows, fast, lambda X: slow.append(1) or real(X)))
    plain = frame_of([(1.5, 3, True, "red", datetime(2024, 5, 6, 7, 8, 9), "Hello, World!", "slow Fast")], False)
    cases = {"plain": (plain, False), "many": (pd.concat([plain] * (FEW_ROWS + 1), ignore_index=True), True),
             "nullable": (plain.astype({"cnt": "Int64"}), True), "dates as text": (plain.astype({"when": str}), True),
             "bytes": (plain.assign(note=np.array([b"bytes"], dtype=object)), True)}
    for name, (X, autogluon) in cases.items():
        expected = own.transform(X.copy())
        slow.clear()
        got = fast.transform(X.copy())
        assert bool(slow) is autogluon, name
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("kinds", [("TextNgramFeatureGenerator",),
                                   ("CategoryFeatureGenerator", "FillNaFeatureGenerator")])
def test_a_generator_without_a_column_path_runs_as_autogluon_s_on_its_columns(pipelines, monkeypatch, kinds):
    """Generators the module does not know get a DataFrame of their columns, and the call still gives AutoGluon's
    frame, without falling back to AutoGluon's whole transform."""
    import app.inference.generators as generators

    own, fast = pipelines
    slow = []
    real = fast.transform.args[1]
    monkeypatch.setattr(fast, "transform", partial(_few_rows, fast, lambda X: slow.append(1) or real(X)))
    monkeypatch.setattr(generators, "COLUMNS", {kind: path for kind, path in generators.COLUMNS.items()
                                                if kind.__name__ not in kinds})
    X = frame_of([(1.5, 3, True, "red", datetime(2024, 5, 6, 7, 8, 9), "Hello, World!", "CHEAP x9"),
                  (None, -4, False, None, None, None, None)], False)
    pd.testing.assert_frame_equal(fast.transform(X.copy()), own.transform(X.copy()), check_exact=True)
    assert not slow


@pytest.mark.parametrize("options", [{}, {"binary": True}, {"dtype": np.float32}, {"dtype": np.int64},
                                     {"analyzer": "char_wb", "ngram_range": (2, 3)}])
def test_counting_tokens_gives_the_vectorizer_s_matrix(options):
    """The n-gram path's counts equal CountVectorizer.transform(...).toarray(): AutoGluon's default vectorizer (uint8:
    a token seen 300 times wraps as scikit-learn's cast wraps it), binary, other dtypes and analyzers; texts without a
    known token, empty, or of symbols only."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from app.inference.generators import _counts

    training = ["fast cheap car", "slow car", "cheap cheap fast", "ÉTÉ naïve 日本", "fast car car"] * 3
    vectorizer = CountVectorizer(**{"min_df": 1, "ngram_range": (1, 3), "dtype": np.uint8, **options}).fit(training)
    texts = ["fast car", "unknown words only", "", "!?.", "cheap " * 300, "ÉTÉ naïve 日本 fast fast", "car\tcar\ncar"]
    for rows in (texts[:1], texts[2:3], texts):
        expected = vectorizer.transform(rows).toarray()
        got = _counts(vectorizer, rows)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    tfidf = TfidfVectorizer().fit(training)  # another vectorizer: called as it is
    assert _counts(tfidf, texts).tobytes() == tfidf.transform(texts).toarray().tobytes()
