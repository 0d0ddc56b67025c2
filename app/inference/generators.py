"""AutoGluon's feature generators on a few rows, in columns instead of DataFrames: the same frame, to the bit.

For a one-row request of a mixed-type model, AutoGluon's feature pipeline costs more than its models: every
generator selects its columns from a DataFrame, builds another, and each stage concatenates them, at tens of
microseconds a pandas operation on one-row columns; the datetime generator (parse, four `.dt` fields) and the
text-special one (a dozen `.str` operations) are the dearest. On up to `FEW_ROWS` rows, the pipeline's stages pass
numpy columns from generator to generator and one DataFrame is built at the end. The generators below compute their
columns with numpy and Python's own str and re (what pandas calls underneath for object columns), or with the same
pandas call AutoGluon makes on one column; any other generator gets a DataFrame of its columns and runs as AutoGluon
runs it. A dtype or value a column path cannot vouch for sends the whole call to AutoGluon's own transform.
"""
from __future__ import annotations

import re
import weakref
from functools import lru_cache, partial
from typing import Any, Callable

import numpy as np
import pandas as pd
from pandas.core.dtypes.cast import coerce_indexer_dtype
from pandas.core.internals import BlockManager
from pandas.core.internals.api import make_block  # pandas' entry for libraries that build frames from blocks
from sklearn.feature_extraction.text import CountVectorizer
from autogluon.features.generators import (AsTypeFeatureGenerator, BinnedFeatureGenerator, BulkFeatureGenerator,
                                          CategoryFeatureGenerator, CategoryMemoryMinimizeFeatureGenerator,
                                          DatetimeFeatureGenerator, DropDuplicatesFeatureGenerator,
                                          DropUniqueFeatureGenerator, FillNaFeatureGenerator,
                                          IdentityFeatureGenerator, TextNgramFeatureGenerator,
                                          TextSpecialFeatureGenerator)

FEW_ROWS = 16  # beyond, pandas' vectorised operations cost less than Python loops over the rows
NAT = np.iinfo(np.int64).min
NANOSECONDS = np.dtype("datetime64[ns]")
Columns = dict[str, Any]  # name → numpy array (or pandas Categorical), in the order of a DataFrame's columns


class Declined(Exception):
    """A column path cannot vouch for this input: AutoGluon's own transform answers the call."""


def pipeline_in_columns(pipeline) -> list[str]:
    """Give a fitted feature pipeline (a predictor's `_learner.feature_generator`) a few-rows path; return the
    generators computed in columns (the others run as AutoGluon's on theirs), or [] when it is left alone."""
    if not isinstance(pipeline, BulkFeatureGenerator) or "transform" in vars(pipeline) or not _plain(pipeline) \
            or pipeline._post_generators:
        return []
    pipeline.transform = partial(_few_rows, pipeline, pipeline.transform)
    inner = [g for stage in pipeline.generators for first in stage for g in [first, *first._post_generators]]
    return sorted({type(g).__name__ for g in inner if type(g) in COLUMNS and _plain(g)})


def _plain(generator) -> bool:
    """Nothing in AutoGluon's transform around _transform that a column path skips: no passthrough, no cast first."""
    return generator._is_fit and not generator.passthrough and generator._pre_astype_generator is None


def feature_columns(predictor, columns: Columns, n: int) -> Columns:
    """What a predictor's feature pipeline makes of a DataFrame of these numpy columns (of n rows, by name), as the
    columns of its output frame, without building either frame: for the predictor's `transform_features=False`
    (through `frame_of`) or the models' arrays (ensembles.py). Declined when the pipeline has no few-rows path or
    would not take it."""
    learner = predictor._learner
    pipeline = learner.feature_generator
    if n > FEW_ROWS or learner.feature_generators != [pipeline] or \
            getattr(vars(pipeline).get("transform"), "func", None) is not _few_rows:
        raise Declined
    taken = {}
    for name in pipeline.features_in:
        column = columns.get(name) if type(name) is str else None
        if not isinstance(column, np.ndarray):
            raise Declined  # missing, or an extension array (nullable integers)
        taken[name] = column.copy()  # ours: generators may write into their input
    return _stages(pipeline, taken, n)


def _few_rows(pipeline, slow: Callable, X: pd.DataFrame) -> pd.DataFrame:
    n = len(X)
    if n > FEW_ROWS or not isinstance(X.index, pd.RangeIndex) or X.index.start != 0 or X.index.step != 1:
        return slow(X)
    try:
        columns = {}
        for name in pipeline.features_in:
            column = X[name] if type(name) is str and name in X.columns else None
            if column is None or not isinstance(column, pd.Series) or not isinstance(column.dtype, np.dtype):
                raise Declined  # missing, duplicated, or an extension dtype (nullable integers, categories)
            columns[name] = column.to_numpy(copy=True)  # ours: generators may write into their input
        return frame_of(_stages(pipeline, columns, n), n)
    except Declined:
        return slow(X)


def _stages(pipeline, columns: Columns, n: int) -> Columns:
    for stage in pipeline.generators:
        out = {}
        for generator in stage:
            part = _through(generator, columns, n)
            if not out.keys().isdisjoint(part):
                raise Declined
            out.update(part)
        columns = out
    return columns


def frame_of(columns: Columns, n: int) -> pd.DataFrame:
    """One DataFrame laid out as pandas consolidates one, a block per numpy dtype (a frame of a block per column is
    quicker to build, 0.5 ms for 120 columns, and far slower for the models to read)."""
    values = list(columns.values())
    groups: dict[np.dtype, list[int]] = {}
    blocks = []
    for i, column in enumerate(values):
        if isinstance(column, pd.Categorical):
            blocks.append(make_block(column, placement=[i], ndim=2))
        elif column.dtype.kind in "biufO":
            groups.setdefault(column.dtype, []).append(i)
        else:  # datetimes and the like: pandas wraps them in its own arrays
            raise Declined
    for positions in groups.values():
        blocks.append(make_block(np.stack([values[i] for i in positions]), placement=positions, ndim=2))
    manager = BlockManager(tuple(blocks), [_index(tuple(columns)), pd.RangeIndex(n)])
    return pd.DataFrame._from_mgr(manager, axes=manager.axes)


@lru_cache(maxsize=64)
def _index(names: tuple[str, ...]) -> pd.Index:
    """The column index of a pipeline's output, built once (20 µs for 119 names); an Index is immutable."""
    return pd.Index(list(names))


def _through(generator, columns: Columns, n: int) -> Columns:
    """One generator and its post-generators on the columns it takes (its features_in)."""
    try:
        taken = {name: columns[name] for name in generator.features_in}
    except KeyError:
        raise Declined from None
    path = COLUMNS.get(type(generator))
    if path is None or not _plain(generator):
        return _as_autogluon(generator, taken, n)
    out = path(generator, taken)
    for post in generator._post_generators:
        out = _through(post, out, n)
    return out


def _as_autogluon(generator, columns: Columns, n: int) -> Columns:
    """A generator without a column path: AutoGluon's transform on a DataFrame of its columns."""
    frame = generator.transform(pd.DataFrame({name: _copy(values) for name, values in columns.items()},
                                             index=pd.RangeIndex(n)))
    dtypes = list(frame.dtypes)
    if not frame.columns.is_unique or not all(isinstance(dtype, (np.dtype, pd.CategoricalDtype)) for dtype in dtypes):
        raise Declined  # nullable and other extension dtypes
    if len(set(dtypes)) == 1 and isinstance(dtypes[0], np.dtype):  # one block: its columns are views of one array
        matrix = frame.to_numpy()
        return {name: matrix[:, j] for j, name in enumerate(frame.columns)}
    return {name: frame[name].array if isinstance(dtype, pd.CategoricalDtype) else frame[name].to_numpy()
            for name, dtype in zip(frame.columns, dtypes)}


def _copy(values):
    return values.copy() if isinstance(values, (np.ndarray, pd.Categorical)) else values


def _astype(generator, columns: Columns) -> Columns:
    """AsTypeFeatureGenerator: boolean features as int8 (1 where equal to the training's true value); then every
    column must already have its training dtype (a cast of any is left to AutoGluon)."""
    out = dict(columns)
    for name, true_value in generator._bool_features.items():
        out[name] = (columns[name].astype(object) == true_value).astype(np.int8)
    for name, values in out.items():
        if not isinstance(values, np.ndarray) or values.dtype != generator._type_map_real_opt[name]:
            raise Declined
    return out


def _fillna(generator, columns: Columns) -> Columns:
    """FillNaFeatureGenerator: missing values of text and category columns replaced by the training's fill value."""
    out = dict(columns)
    for name, value in generator._fillna_feature_map.items():
        values = columns.get(name)
        if values is None:
            continue
        missing = pd.isna(values)
        if missing.any():
            if values.dtype != object:
                raise Declined
            values = values.copy()
            values[missing] = value
            out[name] = values
    return out


def _category(generator, columns: Columns) -> Columns:
    """CategoryFeatureGenerator: the same pandas.Categorical AutoGluon builds, with the training's categories."""
    if generator.category_map is None or generator._fillna_map is not None:
        raise Declined
    kinds = _categories.get(generator)
    if kinds is None:
        kinds = _categories[generator] = {name: _Categories(categories)
                                          for name, categories in generator.category_map.items()}
    return {name: kind.of(columns[name]) for name, kind in kinds.items()}


class _Categories:
    """A fitted column's categories, looked up as pandas' hash table looks them up, with their dtype built once."""

    def __init__(self, categories):
        self.dtype = pd.CategoricalDtype(categories)
        self.position = {category: i for i, category in enumerate(self.dtype.categories)}
        self.codes = coerce_indexer_dtype(np.array([-1]), self.dtype.categories).dtype

    def of(self, values: np.ndarray) -> pd.Categorical:
        """pd.Categorical(values, categories=...): a text's code is its category's position, -1 when unseen or
        missing (a quarter of the cost; other values than text and missing ones go to pandas)."""
        if values.dtype != object or not all(type(v) is str or v is None or (type(v) is float and v != v)
                                             for v in values):
            return pd.Categorical(values, categories=self.dtype.categories)
        codes = np.fromiter((self.position.get(v, -1) for v in values), dtype=self.codes, count=len(values))
        return pd.Categorical.from_codes(codes, dtype=self.dtype, validate=False)


_categories: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # a fitted generator's, built once


def _minimized(generator, columns: Columns) -> Columns:
    """CategoryMemoryMinimizeFeatureGenerator: categories renamed 0, 1, 2, ... as AutoGluon renames them."""
    if not generator._category_maps:
        return columns
    if not all(isinstance(columns[name], pd.Categorical) for name in generator._category_maps):
        raise Declined
    return {name: columns[name].rename_categories(categories) for name, categories in generator._category_maps.items()}


DATE_PARTS = {"year": lambda stamps: stamps.astype("datetime64[Y]").astype(np.int64) + 1970,
              "month": lambda stamps: stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1,
              "day": lambda stamps: (stamps.astype("datetime64[D]")
                                     - stamps.astype("datetime64[M]")).astype(np.int64) + 1,
              "dayofweek": lambda stamps: (stamps.astype("datetime64[D]").astype(np.int64) + 3) % 7}  # 1970-01-01: Thu


def _datetime(generator, columns: Columns) -> Columns:
    """DatetimeFeatureGenerator: each datetime as int64 nanoseconds (UTC; missing → the training's mean), then its
    year, month, day and day of week."""
    if not set(generator.features) <= DATE_PARTS.keys():
        raise Declined
    out = {}
    for name, values in columns.items():
        if values.dtype != NANOSECONDS or name not in generator._fillna_map:  # zoned, other units, text: pandas
            raise Declined
        ns = values.view(np.int64).copy()
        ns[ns == NAT] = generator._fillna_map[name].value
        out[name] = ns
        for part in generator.features:
            out[f"{name}.{part}"] = DATE_PARTS[part](ns.view(NANOSECONDS))
    return out


RATIOS = {"capital_ratio": re.compile("[A-Z]"), "lower_ratio": re.compile("[a-z]"), "digit_ratio": re.compile("[0-9]"),
          "special_ratio": re.compile(r"[^\w]")}


def _text_special(generator, columns: Columns) -> Columns:
    """TextSpecialFeatureGenerator: character and word counts, the share of capitals, lower-case letters, digits and
    other characters (spaces removed), and each kept symbol's count and share, for str values."""
    out = {}
    for name, values in columns.items():
        if values.dtype != object or not all(type(value) is str for value in values):
            raise Declined
        names = generator._feature_names_dict[name]
        bare = [value.replace(" ", "") for value in values]
        bare_lengths = [len(value) for value in bare]
        lengths = [len(value) for value in values]
        out[names["char_count"]] = np.array(lengths, dtype=np.uint32)
        out[names["word_count"]] = np.array([len(value.split()) for value in values], dtype=np.uint32)
        for ratio, pattern in RATIOS.items():
            out[names[ratio]] = _shares([len(pattern.findall(value)) for value in bare], bare_lengths)
        for symbol in generator._symbols_per_feature[name]:
            pattern = re.compile("\\" + symbol)  # pandas' str.count of the same pattern
            counts = [len(pattern.findall(value)) for value in values]
            out[names[symbol]["count"]] = np.array(counts, dtype=np.uint32)
            out[names[symbol]["ratio"]] = _shares(counts, lengths)
    return out


def _shares(counts: list[int], totals: list[int]) -> np.ndarray:
    """count ÷ total as a float64 rounded to float32 (0 for an empty text, as pandas' 0/0 → NaN → fillna(0))."""
    return np.array([count / total if total else 0.0 for count, total in zip(counts, totals)], dtype=np.float32)


def _text_ngram(generator, columns: Columns) -> Columns:
    """TextNgramFeatureGenerator: the same vectorizer calls on the same text (the row's texts joined by ". " for the
    combined vectorizer), each row's count of distinct n-grams after them, then the tokens kept at fit."""
    if not all(values.dtype == object and all(type(value) is str for value in values) for values in columns.values()):
        raise Declined
    out = {}
    for feature, vectorizer in zip(generator.vectorizer_features or [], generator.vectorizers):
        text = [". ".join(row) for row in zip(*columns.values())] if feature == "__nlp__" else columns[feature]
        counts = _counts(vectorizer, text)
        counts = np.append(counts, np.expand_dims(np.count_nonzero(counts, axis=1).astype(np.uint16), axis=1), axis=1)
        names = [str(name) for name in generator._feature_names_dict[feature]]
        if len(names) != counts.shape[1] or not out.keys().isdisjoint(names):
            raise Declined
        out.update((name, counts[:, j]) for j, name in enumerate(names))
    if generator.prefilter_tokens:
        out = {name: values for (name, values), kept in zip(out.items(), generator.token_mask) if kept}
    return out


def _counts(vectorizer, texts: list[str]) -> np.ndarray:
    """CountVectorizer.transform(texts).toarray() without the sparse matrix: each text's tokens from the same analyzer
    counted against the vocabulary as scikit-learn counts them (int32, then the vectorizer's dtype, wrapping as it
    does; binary: 1 where a token occurs). Other vectorizers (TF-IDF) are called as they are."""
    if type(vectorizer) is not CountVectorizer:
        return vectorizer.transform(texts).toarray()
    vectorizer._check_vocabulary()
    analyze = _analyzers.get(vectorizer)
    if analyze is None:
        analyze = _analyzers[vectorizer] = vectorizer.build_analyzer()
    vocabulary = vectorizer.vocabulary_
    counts = np.zeros((len(texts), len(vocabulary)), dtype=np.intc)
    for i, text in enumerate(texts):
        found: dict[int, int] = {}
        for token in analyze(text):
            j = vocabulary.get(token)
            if j is not None:
                found[j] = found.get(j, 0) + 1
        counts[i, list(found)] = list(found.values())
    if vectorizer.binary:
        return (counts > 0).astype(vectorizer.dtype)
    return counts.astype(vectorizer.dtype)


_analyzers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # a fitted vectorizer's, built once


def _binned(generator, columns: Columns) -> Columns:
    """BinnedFeatureGenerator: each binned column's bin (numpy's digitize, as AutoGluon's bin_column)."""
    return {name: np.digitize(columns[name], bins=bins, right=True).astype(generator._astype_map[name])
            for name, bins in generator._bin_map.items()}


def _kept(generator, columns: Columns) -> Columns:
    """A generator whose _transform returns its input: the columns it takes."""
    return columns


COLUMNS = {AsTypeFeatureGenerator: _astype, FillNaFeatureGenerator: _fillna, IdentityFeatureGenerator: _kept,
           CategoryFeatureGenerator: _category, CategoryMemoryMinimizeFeatureGenerator: _minimized,
           DatetimeFeatureGenerator: _datetime, TextSpecialFeatureGenerator: _text_special,
           TextNgramFeatureGenerator: _text_ngram,
           BinnedFeatureGenerator: _binned, DropUniqueFeatureGenerator: _kept, DropDuplicatesFeatureGenerator: _kept}
