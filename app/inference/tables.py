"""Input tables: rows from JSON records, the pandas "split" orientation or CSV, as columns of raw values; the
whole-column converters the fast validator (app/inference/features.py) applies per kind; the DataFrame AutoGluon gets.

The marshmallow row schema stays the authority: a converter accepts only values whose conversion it is sure
matches marshmallow's; anything else (an error, a numeric string in JSON, an unusual boolean) raises SlowPath and goes
to marshmallow, which either accepts it or words the error.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.inference.errors import InvalidInput
from app.values import DATETIME_MAX, DATETIME_MIN, DATETIME_TEXT, NAME_MAX, NUMBER_TEXT_MAX


class SlowPath(Exception):
    """The fast path cannot vouch for a value: let marshmallow decide. Its args name the features holding one, when
    the fast path knows them."""


@dataclass
class Table:
    """Raw input: one list of values per column name, all of length n; `records` when the input was rows."""

    columns: dict[str, list[Any]]
    n: int
    records: list[Any] | None = None

    def rows(self, indices: list[int] | None = None) -> list[dict[str, Any]]:
        """The rows as marshmallow judges them: all, or those at indices."""
        if self.records is not None:
            return self.records if indices is None else [self.records[i] for i in indices]
        names = list(self.columns)
        picked = self.columns if indices is None else take_rows(self.columns, indices)
        n = self.n if indices is None else len(indices)
        return [dict(zip(names, values)) for values in zip(*picked.values())] if names else [{}] * n


def keys_match(rows: list[dict[str, Any]], features: list[str]) -> Iterator[bool]:
    """For each row object, whether its keys are exactly the features (mapped over the rows: C speed)."""
    return map(operator.eq, map(dict.keys, rows), repeat(set(features)))


def table_from_records(rows: list[Any], features: list[str]) -> Table:
    """Columns from a list of row objects; rows with other keys send the table to the slow path."""
    regular = set(map(type, rows)) <= {dict} and all(keys_match(rows, features))
    if not regular:
        long = {str(i): {"_schema": [f"Keys are at most {NAME_MAX} characters."]} for i, row in enumerate(rows)
                if type(row) is dict and any(len(key) > NAME_MAX for key in row)}
        if long:  # refused here, so that marshmallow never echoes a megabyte key back
            raise InvalidInput(f"rows have keys longer than {NAME_MAX} characters (no feature's name is)",
                               {"rows": dict(list(long.items())[:100]), "invalid_rows": len(long)})
        return Table({}, len(rows), rows)
    return Table({name: list(map(operator.itemgetter(name), rows)) for name in features}, len(rows), rows)


def table_from_split(columns: list[Any], data: list[Any]) -> Table:
    """Columns from {"columns": [...], "data": [[...], ...]}."""
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise InvalidInput('"data.columns" must be distinct strings', {"columns": ["Not a list of distinct names."]})
    bad = [i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != len(columns)]
    if bad:
        raise InvalidInput(f'every row of "data.data" must be a list of {len(columns)} values',
                           {"rows": {str(i): {"_schema": ["Wrong number of values."]} for i in bad[:100]},
                            "invalid_rows": len(bad)})
    values = list(zip(*data)) if data else [() for _ in columns]
    return Table({name: list(column) for name, column in zip(columns, values)}, len(data))


def check_names(names: list[str], features: list[str], unknown: str, missing: str) -> None:
    """InvalidInput when columns repeat, or break the unknown/missing rules (at most 100 names are listed)."""
    long = sum(1 for name in names if len(name) > NAME_MAX)
    if long:
        raise InvalidInput(f"{long} column names are longer than {NAME_MAX} characters (no feature's name is)",
                           {"columns": {"_schema": [f"Names are at most {NAME_MAX} characters."]}})
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name in names:
        if name in seen:
            errors[name] = ["Given twice."]
        seen.add(name)
    if unknown == "raise":
        errors.update({extra: ["Unknown field."] for extra in sorted(seen - set(features))})
    if missing == "raise":
        errors.update({absent: ["Missing data for required field."] for absent in features if absent not in seen})
    if errors:
        listed = dict(list(errors.items())[:100])
        raise InvalidInput("the columns do not match the model's features", {"columns": listed,
                                                                              "invalid_columns": len(errors)})


def check_columns(table: Table, features: list[str], unknown: str, missing: str) -> Table:
    """Apply the unknown/missing rules to a columnar table (records are checked by the row schema)."""
    if table.records is not None and not table.columns:
        return table
    check_names(list(table.columns), features, unknown, missing)
    for extra in set(table.columns) - set(features):
        table.columns.pop(extra)
    for absent in [f for f in features if f not in table.columns]:
        table.columns[absent] = [None] * table.n
    return table


NUMERIC_KINDS = ("numeric", "integer")  # the kinds numbers() converts


class CsvText(list):
    """A CSV column's text as read (None for an empty cell) and, when pyarrow could parse every cell, its numbers."""

    __slots__ = ("floats",)

    def __init__(self, values: list[Any], floats: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__(values)
        self.floats = floats  # float64 (NaN where missing) and where missing


def parsed_floats(cells: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """pyarrow's cast of text cells to float64 and where cells are missing: correctly rounded as float() rounds, 20
    times cheaper a cell; None when it refuses one (it accepts less than float(): no spaces, underscores or non-ASCII
    digits), for float() to judge."""
    if len(cells) == 0 or (pc.max(pc.binary_length(cells)).as_py() or 0) > NUMBER_TEXT_MAX:  # None: no text
        return None
    try:
        cast = pc.cast(cells, pa.float64())
    except pa.ArrowInvalid:
        return None
    return np.array(cast.to_numpy()), cast.is_null().to_numpy()  # a copy: writable, and no arrow buffer kept


def numbers(values: list[Any], integral: bool) -> np.ndarray:
    """float64 with NaN for missing; text (CSV) parsed the way float() parses it."""
    if type(values) is CsvText and values.floats is not None:
        array, missing = values.floats
    else:
        array, missing = _python_numbers(values)
    present = array[~missing]
    if not np.isfinite(present).all() or (integral and (present != np.round(present)).any()):
        raise SlowPath()
    if integral and np.abs(present).max(initial=0) >= 2 ** 53:
        raise SlowPath()  # beyond exact float64 integers: let marshmallow judge
    return array


def _python_numbers(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    kinds = set(map(type, values))
    if not kinds:  # a column of no rows
        return np.empty(0, dtype="float64"), np.empty(0, dtype=bool)
    some_missing = type(None) in kinds  # a column without gaps is converted whole, at C speed
    if kinds <= {int, float, type(None)}:
        try:
            array = np.array([np.nan if v is None else v for v in values] if some_missing else values, dtype="float64")
        except OverflowError:
            raise SlowPath() from None
        missing = _gaps(values, some_missing)
    elif kinds <= {str, type(None)}:
        # float() as marshmallow reads text; pandas' to_numeric is a ulp off on some 17-digit values
        present = [v for v in values if v is not None] if some_missing else values
        if present and max(map(len, present)) > NUMBER_TEXT_MAX:
            raise SlowPath()
        try:
            array = np.array([np.nan if v is None else float(v) for v in values] if some_missing
                             else list(map(float, values)), dtype="float64")
        except ValueError:
            raise SlowPath() from None
        missing = _gaps(values, some_missing)
    else:
        raise SlowPath()
    return array, missing


def _gaps(values: list[Any], some_missing: bool) -> np.ndarray:
    return np.array([v is None for v in values], dtype=bool) if some_missing else np.zeros(len(values), dtype=bool)


def booleans(values: list[Any], truthy: set[Any], falsy: set[Any]) -> list[Any]:
    """Booleans; text only in the spellings given (the marshmallow field's)."""
    out = []
    for value in values:
        if value is None or type(value) is bool:
            out.append(value)
        elif isinstance(value, str) and value in truthy:
            out.append(True)
        elif isinstance(value, str) and value in falsy:
            out.append(False)
        else:
            raise SlowPath()
    return out


def strings(values: list[Any]) -> list[Any]:
    kinds = set(map(type, values))  # checked whole, so the values are stripped at C speed
    if not kinds <= {str, type(None)}:
        raise SlowPath()
    return [None if v is None else v.strip() for v in values] if type(None) in kinds else list(map(str.strip, values))


def datetimes(values: list[Any]) -> list[Any]:
    texts = strings(values)
    present = [text for text in texts if text is not None]
    if not present:
        return texts
    # the text as marshmallow's IsoDateTime reads it
    if max(map(len, present)) > NUMBER_TEXT_MAX or not all_match(DATETIME_TEXT, present):
        raise SlowPath()
    try:
        moments = list(map(datetime.fromisoformat, present))
    except ValueError:
        raise SlowPath() from None
    if set(map(operator.attrgetter("tzinfo"), moments)) != {None} or min(moments) < DATETIME_MIN or \
            max(moments) > DATETIME_MAX:
        raise SlowPath()
    return texts


def all_match(pattern: re.Pattern, texts: list[str]) -> bool:
    """Whether every text matches pattern whole: one regex scan over the texts joined by line breaks, counting the
    lines that match (3 times cheaper than a call per text); a text holding a line break fails."""
    if not texts:
        return True
    joined = "\n".join(texts)
    return joined.count("\n") == len(texts) - 1 and len(_whole_lines(pattern).findall(joined)) == len(texts)


@lru_cache(maxsize=8)
def _whole_lines(pattern: re.Pattern) -> re.Pattern:
    return re.compile(f"^(?:{pattern.pattern})$", re.MULTILINE)


def frame_from_columns(columns: dict[str, Any], kinds: dict[str, str]) -> pd.DataFrame:
    """A DataFrame of model_columns."""
    return pd.DataFrame(model_columns(columns, kinds), copy=False)


def model_columns(columns: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    """Validated columns with the dtypes AutoGluon casts exactly as in training. Every column is an array of its own,
    never the validated column itself (the prediction log and monitoring read those after the model call), so pandas
    is spared its own copy: half the cost of a mixed-type row's frame."""
    data = {}
    for name, kind in kinds.items():
        values = columns[name]
        if kind == "numeric":
            data[name] = np.array(values, dtype="float64")
        elif kind == "integer":
            data[name] = _integer_column(values)
        elif kind == "datetime":
            data[name] = _datetime_column(values)
        elif kind == "boolean" and None not in values:
            data[name] = np.asarray(values, dtype=bool)
        else:
            data[name] = _objects(values)
    return data


def _integer_column(values):
    """int64 when nothing is missing (exact, past 2**53 too); otherwise float64 with NaN below 2**53 (the fast path's
    columns) or pandas' nullable Int64: AutoGluon casts an integer feature back to int64, where a float rounded up to
    2**63 would wrap to -2**63, and a row's answer must not depend on a missing value in another row of its batch."""
    if isinstance(values, np.ndarray):
        return values.copy() if np.isnan(values).any() else values.astype("int64")
    if any(v is None for v in values):
        return pd.array(values, dtype="Int64")
    return np.array(values, dtype="int64")


PLAIN_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?")


def _objects(values: list[Any]) -> np.ndarray:
    """An object column; filled in place, so no value is read as a sequence, and 40 times cheaper than pd.array."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _datetime_column(values: list[Any]):
    """datetime64 when every value is a naive ISO date-time (what AutoGluon would parse them to, sooner);
    otherwise the text, for AutoGluon to parse as it did in training."""
    if set(map(type, values)) <= {str, type(None)} and \
            all_match(PLAIN_DATETIME, [v for v in values if v is not None]):
        try:  # numpy parses these plain forms as pandas' ISO8601 does, some 300 times faster for a few rows
            return np.array(values, dtype="datetime64[ns]")
        except (ValueError, OverflowError):
            pass
    try:
        parsed = pd.to_datetime(pd.Series(values, dtype="object"), format="ISO8601")
    except (ValueError, TypeError):  # e.g. naive and zoned values mixed
        return _objects(values)
    if parsed.dtype.kind != "M" or isinstance(parsed.dtype, pd.DatetimeTZDtype):  # zoned, or mixed offsets
        return _objects(values)
    return parsed.to_numpy()


def columns_from_rows(rows: list[dict[str, Any]], names: list[str]) -> dict[str, list[Any]]:
    """Columns from rows that marshmallow has validated (a feature it may omit is missing)."""
    return {name: [row.get(name) for row in rows] for name in names}


def merge_columns(parts: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, Any]:
    """One set of columns from several requests' columns, in order."""
    merged = {}
    for name, kind in kinds.items():
        if kind == "numeric" or (kind == "integer" and all(isinstance(part[name], np.ndarray) for part in parts)):
            merged[name] = np.concatenate([np.asarray(part[name], dtype="float64") for part in parts])
        elif kind == "integer":  # a Python int past 2**53 must stay exact: merge as values, missing as None
            merged[name] = [None if isinstance(v, float) and math.isnan(v) else v for part in parts
                            for v in (part[name].tolist() if isinstance(part[name], np.ndarray) else part[name])]
        else:
            merged[name] = [value for part in parts for value in part[name]]
    return merged


def take_rows(columns: dict[str, Any], indices: list[int]) -> dict[str, Any]:
    """The given rows of validated columns, in that order."""
    return {name: values[indices] if isinstance(values, np.ndarray) else [values[i] for i in indices]
            for name, values in columns.items()}
