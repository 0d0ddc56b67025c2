"""AutoGluon's datetime and text-special generators on a few rows (app/inference/generators.py) give its frame."""
from __future__ import annotations

import copy
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.generators import FEW_ROWS, generators_in_numpy

SYMBOLS = "!?@%$*&#^.:/;-= \t\n"
WORDS = ["Fast", "slow", "CHEAP", "n0te", "x9", "ÉTÉ", "naïve", "a_b", "", "42", "日本", "e-mail", "C++", "50%"]


def training_frame(n: int = 400) -> pd.DataFrame:
    """Text with every symbol, capitals and digits often enough that AutoGluon keeps them; datetimes with NaT."""
    rng = np.random.default_rng(0)
    text = [" ".join(rng.choice(WORDS) + rng.choice(list(SYMBOLS)) for _ in range(rng.integers(3, 9)))
            for _ in range(n)]
    when = pd.Series(pd.Timestamp("1990-01-01") + pd.to_timedelta(rng.integers(-30_000, 30_000, n), unit="D")
                     + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"))
    when[rng.random(n) < 0.1] = pd.NaT
    return pd.DataFrame({"x": rng.normal(size=n), "when": when, "note": text})


@pytest.fixture(scope="module")
def pipelines():
    """A fitted AutoML feature pipeline as AutoGluon has it, and a copy given the few-rows paths."""
    from autogluon.features.generators import AutoMLPipelineFeatureGenerator

    own = AutoMLPipelineFeatureGenerator(verbosity=0)
    own.fit_transform(training_frame())
    fast = copy.deepcopy(own)
    assert sorted(generators_in_numpy(fast)) == ["DatetimeFeatureGenerator", "TextSpecialFeatureGenerator"]
    text_special = next(g for stage in fast.generators for g in stage if type(g).__name__.startswith("TextSpecial"))
    assert len(text_special._symbols_per_feature["note"]) >= 10, "the data should keep most symbols"
    return own, fast


TEXT = st.one_of(st.none(), st.text(st.sampled_from(SYMBOLS + "aZ09_é日\u00a0\u2003\x0b")),
                 st.text(st.characters(codec=None, categories=None)), st.sampled_from(WORDS))
WHEN = st.one_of(st.none(), st.datetimes(datetime(1677, 9, 23), datetime(2262, 4, 10)),
                 st.datetimes(datetime(1969, 12, 31), datetime(1970, 1, 2)))
ROW = st.tuples(st.one_of(st.none(), st.floats(allow_nan=False)), WHEN, TEXT)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(ROW, min_size=1, max_size=FEW_ROWS + 4))
def test_a_few_rows_transform_to_autogluon_s_frame(pipelines, rows):
    """Any datetimes (NaT, before 1970, the ends of pandas' range) and any text (empty, whitespace of every kind,
    symbols, non-ASCII, lone surrogates): the same columns, dtypes and values as AutoGluon's own transform."""
    own, fast = pipelines
    X = pd.DataFrame({"x": np.array([np.nan if r[0] is None else r[0] for r in rows], dtype="float64"),
                      "when": np.array([r[1] for r in rows], dtype="datetime64[ns]"),
                      "note": pd.Series([r[2] for r in rows], dtype="object")})
    expected = own.transform(X.copy())
    got = fast.transform(X.copy())
    assert list(got.dtypes) == list(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_other_dtypes_and_more_rows_go_to_autogluon(pipelines, monkeypatch):
    """Datetimes as text, text that is not str, and more than FEW_ROWS rows take AutoGluon's path (and get its
    answer); the generators are called directly, as AutoGluon's own cast before them lets no such column through."""
    from autogluon.features.generators import DatetimeFeatureGenerator, TextSpecialFeatureGenerator

    own, fast = ({type(g): g for stage in pipeline.generators for g in stage} for pipeline in pipelines)
    slow = []
    for kind in (DatetimeFeatureGenerator, TextSpecialFeatureGenerator):
        real = kind._transform
        monkeypatch.setattr(kind, "_transform", lambda self, X, real=real: slow.append(type(self)) or real(self, X))
    base = pd.DataFrame({"x": [1.0], "when": pd.to_datetime(["2024-05-06 07:08:09"]), "note": ["Hello, World!"]})
    many = pd.concat([base] * (FEW_ROWS + 1), ignore_index=True)
    cases = [(DatetimeFeatureGenerator, base, False), (DatetimeFeatureGenerator, base.astype({"when": str}), True),
             (DatetimeFeatureGenerator, many, True), (TextSpecialFeatureGenerator, base, False),
             (TextSpecialFeatureGenerator, base.assign(note=[b"bytes"]), True),
             (TextSpecialFeatureGenerator, many, True)]
    for kind, X, autogluon in cases:
        expected = own[kind].transform(X.copy())
        slow.clear()
        got = fast[kind].transform(X.copy())
        assert slow == ([kind] if autogluon else []), (kind, X.dtypes)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
