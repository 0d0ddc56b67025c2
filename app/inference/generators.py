"""AutoGluon's datetime and text-special feature generators on a few rows, without pandas: the same frame, to the bit.

For a one-row request of a mixed-type model, AutoGluon's feature generators cost more than its models: each pandas
operation on a one-row column costs tens of microseconds, and the datetime generator (parse, four `.dt` fields) and
the text-special one (a dozen `.str` operations) make about half of `transform_features`. On up to `FEW_ROWS` rows
of the dtypes they see from our frames (naive datetime64[ns], Python str), these compute the same values with numpy
and Python's own str and re (what pandas calls underneath for object columns); anything else goes to AutoGluon.
"""
from __future__ import annotations

import re
from functools import partial

import numpy as np
import pandas as pd
from autogluon.features.generators import (BinnedFeatureGenerator, DatetimeFeatureGenerator,
                                          DropDuplicatesFeatureGenerator, DropUniqueFeatureGenerator,
                                          IdentityFeatureGenerator, TextSpecialFeatureGenerator)

FEW_ROWS = 16  # beyond, pandas' vectorised operations cost less than a Python loop over the rows
NAT = np.iinfo(np.int64).min
NANOSECONDS = np.dtype("datetime64[ns]")


def generators_in_numpy(pipeline) -> list[str]:
    """Give the datetime and text-special generators of a fitted feature pipeline (a predictor's
    `_learner.feature_generator`) a path for a few rows; return their names."""
    changed = []
    for generator in _generators(pipeline):
        fast = FAST.get(type(generator))
        if fast is not None and "transform" not in vars(generator) and _plain(generator) and fast.applies(generator) \
                and all(type(post) in SELECTIONS and _plain(post) and not post._post_generators
                        for post in generator._post_generators):
            generator.transform = partial(_few_rows, fast.transform, generator, generator.transform)
            changed.append(type(generator).__name__)
    return changed


def _generators(generator):
    yield generator
    for stage in getattr(generator, "generators", None) or []:
        for inner in stage:
            yield from _generators(inner)
    for inner in getattr(generator, "_post_generators", None) or []:
        yield from _generators(inner)


def _plain(generator) -> bool:
    """Nothing in AutoGluon's transform around _transform that the fast path skips: no passthrough, no cast first."""
    return not generator.passthrough and generator._pre_astype_generator is None and generator._is_fit


def _few_rows(fast, generator, slow, X: pd.DataFrame) -> pd.DataFrame:
    """The fast transform and its post-generators, in columns, when X is a few rows it can vouch for (None from it: it
    cannot), else AutoGluon's."""
    if len(X) > FEW_ROWS or not isinstance(X.index, pd.RangeIndex) or X.index.start != 0 or X.index.step != 1 \
            or not all(type(name) is str for name in X.columns) or not set(generator.features_in) <= set(X.columns):
        return slow(X)
    out = fast(generator, X)
    if out is None:
        return slow(X)
    for post in generator._post_generators:
        out = SELECTIONS[type(post)](post, out)
    return pd.DataFrame(out, index=X.index)


def _binned(generator, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BinnedFeatureGenerator: each binned column's bin (numpy's digitize, as AutoGluon's bin_column)."""
    return {name: np.digitize(columns[name], bins=bins, right=True).astype(generator._astype_map[name])
            for name, bins in generator._bin_map.items()}


def _kept(generator, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A generator whose _transform returns its input: the columns it kept at fit (its features_in)."""
    return {name: columns[name] for name in generator.features_in}


class Datetimes:
    """DatetimeFeatureGenerator: each datetime as int64 nanoseconds (UTC; missing → the training mean), then its
    year, month, day and day of week."""

    PARTS = ("year", "month", "day", "dayofweek")

    @classmethod
    def applies(cls, generator) -> bool:
        return set(generator.features) <= set(cls.PARTS) and set(generator.features_in) <= set(generator._fillna_map)

    @staticmethod
    def transform(generator, X: pd.DataFrame) -> dict[str, np.ndarray] | None:
        out = {}
        for feature in generator.features_in:
            column = X[feature]
            if column.dtype != NANOSECONDS:  # zoned, other units or text: pandas decides
                return None
            ns = column.to_numpy().view(np.int64).copy()
            ns[ns == NAT] = generator._fillna_map[feature].value
            out[feature] = ns
            stamps = ns.view(NANOSECONDS)
            days = stamps.astype("datetime64[D]")
            months = stamps.astype("datetime64[M]")
            parts = {"year": lambda: stamps.astype("datetime64[Y]").astype(np.int64) + 1970,
                     "month": lambda: months.astype(np.int64) % 12 + 1,
                     "day": lambda: (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
                     "dayofweek": lambda: (days.astype(np.int64) + 3) % 7}  # 1970-01-01 was a Thursday (3)
            for part in generator.features:
                out[f"{feature}.{part}"] = parts[part]()
        return out


class TextSpecial:
    """TextSpecialFeatureGenerator: character and word counts, the share of capitals, lower-case letters, digits and
    other characters (spaces removed), and each kept symbol's count and share, for str values."""

    RATIOS = {"capital_ratio": re.compile("[A-Z]"), "lower_ratio": re.compile("[a-z]"),
              "digit_ratio": re.compile("[0-9]"), "special_ratio": re.compile(r"[^\w]")}

    @staticmethod
    def applies(generator) -> bool:
        return all(feature in generator._feature_names_dict for feature in generator.features_in)

    @classmethod
    def transform(cls, generator, X: pd.DataFrame) -> dict[str, np.ndarray] | None:
        out = {}
        for feature in generator.features_in:
            column = X[feature]
            values = column.to_numpy()
            if column.dtype != object or not all(type(value) is str for value in values):
                return None
            names = generator._feature_names_dict[feature]
            bare = [value.replace(" ", "") for value in values]
            bare_lengths = [len(value) for value in bare]
            lengths = [len(value) for value in values]
            out[names["char_count"]] = np.array(lengths, dtype=np.uint32)
            out[names["word_count"]] = np.array([len(value.split()) for value in values], dtype=np.uint32)
            for name, pattern in cls.RATIOS.items():
                out[names[name]] = _shares([len(pattern.findall(value)) for value in bare], bare_lengths)
            for symbol in generator._symbols_per_feature[feature]:
                pattern = re.compile("\\" + symbol)  # pandas' str.count of the same pattern
                counts = [len(pattern.findall(value)) for value in values]
                out[names[symbol]["count"]] = np.array(counts, dtype=np.uint32)
                out[names[symbol]["ratio"]] = _shares(counts, lengths)
        return out


def _shares(counts: list[int], totals: list[int]) -> np.ndarray:
    """count ÷ total as a float64 rounded to float32 (0 for an empty text, as pandas' 0/0 → NaN → fillna(0))."""
    return np.array([count / total if total else 0.0 for count, total in zip(counts, totals)], dtype=np.float32)


FAST = {DatetimeFeatureGenerator: Datetimes, TextSpecialFeatureGenerator: TextSpecial}
SELECTIONS = {BinnedFeatureGenerator: _binned, DropDuplicatesFeatureGenerator: _kept, DropUniqueFeatureGenerator: _kept,
              IdentityFeatureGenerator: _kept}
