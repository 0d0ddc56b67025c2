"""CSV: a body with a header row into a Table (checked before a row is read); answers as CSV rows."""
from __future__ import annotations

import csv
import io
import re

import pandas as pd
import pyarrow as pa
from pyarrow import csv as pa_csv

from app.codecs.envelope import check_columns, check_rows, require_rows
from app.errors import ApiError
from app.inference.served import Prediction, ServedModel
from app.inference.tables import NUMERIC_KINDS, CsvText, Table, check_names, parsed_floats
from app.values import NAME_MAX

CELL_ENDS = (b",", b"\n", b"\r")
BLANK_LINE = re.compile(rb"(?:^|\n)[ \t]+(?:\r?\n|$)")
SENTINEL = b"\x01"  # a row of these cells ends the body pyarrow reads (pyarrow misreads NUL past its first MiB)


def decode(body: bytes, model: ServedModel, max_rows: int) -> Table:
    """The rows of a CSV body with a header row; the row limit is checked on the rows read, one past it at most."""
    table = _read_table(body, model, max_rows)
    check_rows(table.n, max_rows, counted=False)
    return require_rows(table)


def _read_table(body: bytes, model: ServedModel, max_rows: int) -> Table:
    names = _csv_header(body, model)
    _check_cell_bytes(body, model.max_cell_bytes)
    nul = body.find(b"\x00")
    if nul >= 0:  # pandas would end the cell there and drop the rest, pyarrow misread it, both without a word
        line = body.count(b"\n", 0, nul) + 1
        raise ApiError(422, f"the CSV body holds a NUL character (line {line}); CSV cells cannot carry one",
                       {"data": [f"NUL character on line {line}."]})
    wanted = [name for name in names if name in model.feature_names]
    numeric = {name for name in wanted if model.spec.kinds[name] in NUMERIC_KINDS}
    table = _arrow_table(body, names, wanted, numeric, max_rows)
    return table if table is not None else _pandas_table(body, wanted, max_rows)


def _arrow_table(body: bytes, names: list[str], wanted: list[str], numeric: set[str], max_rows: int) -> Table | None:
    """The wanted columns as text (None for an empty cell) up to the row past max_rows, read by pyarrow on one
    thread (4 times cheaper than pandas at 32 MiB), every column as text so that all are checked for UTF-8 as pandas
    does. None when the body holds what pandas reads otherwise or refuses, for pandas to decide: a line break that is
    a lone CR, a line of only spaces or tabs (pandas skips it), a ragged row, a quoted cell left open at the end
    (pyarrow ends it silently; a row of SENTINEL cells appended to a body without any shows it, swallowed by the
    open cell)."""
    if not wanted or SENTINEL in body or (b"\r" in body and body.count(b"\r") != body.count(b"\r\n")) or \
            (len(names) == 1 and BLANK_LINE.search(body)):
        return None
    ending = b"" if body.endswith(b"\n") else b"\n"
    try:
        table = pa_csv.read_csv(pa.py_buffer(body + ending + b",".join([SENTINEL] * len(names)) + b"\n"),
                                read_options=pa_csv.ReadOptions(use_threads=False),
                                parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                                convert_options=pa_csv.ConvertOptions(
                                    column_types=dict.fromkeys(names, pa.string()), include_columns=names,
                                    null_values=[""], strings_can_be_null=True))
    except (pa.ArrowInvalid, KeyError):  # KeyError: a wanted name pyarrow reads otherwise from the header
        return None
    last = table.num_rows - 1
    if last < 0 or table.column(0)[last].as_py() != SENTINEL.decode():
        return None
    rows = min(last, max_rows + 1)  # as many as pandas reads, so that the limit is checked alike
    columns = {name: _text(table.column(name).slice(0, rows), name in numeric) for name in wanted}
    del table
    pa.default_memory_pool().release_unused()  # else the pool keeps a 32 MiB body's ~35 MB in every worker
    return Table(columns, rows)


def _text(cells: pa.ChunkedArray, numeric: bool) -> CsvText:
    """A column's text, and its numbers parsed by pyarrow when the feature is numeric."""
    return CsvText(cells.to_numpy(zero_copy_only=False).tolist(), parsed_floats(cells) if numeric else None)


def _pandas_table(body: bytes, wanted: list[str], max_rows: int) -> Table:
    """The wanted columns as text (None for an empty cell), read by pandas, or the 400 or 422 of its refusal."""
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8",
                            encoding_errors="strict", nrows=max_rows + 1, usecols=wanted)
    except pd.errors.EmptyDataError:
        raise ApiError(422, "the CSV body has no header row", {"data": ["Missing data for required field."]}) from None
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "request body is not valid UTF-8 CSV", {"reason": type(exc).__name__}) from None
    return Table({str(name): [None if value is None or value != value else value for value in frame[name].tolist()]
                  for name in frame.columns}, len(frame))


def _csv_header(body: bytes, model: ServedModel) -> list[str]:
    """The header's column names, checked (count, then names) before a single row is read: a header of a
    million columns costs a scan of its first line, not a million-column frame."""
    ends = [i for i in (body.find(b"\n"), body.find(b"\r")) if i >= 0]
    end = min(ends) if ends else len(body)
    check_columns(body.count(b",", 0, end) + 1, model.max_columns)  # quoted commas count too: an upper bound
    if end > model.max_columns * (NAME_MAX + 3):  # every name at most NAME_MAX, quoted, plus a comma
        raise ApiError(413, f"the CSV header is longer than {model.max_columns * (NAME_MAX + 3)} bytes",
                       {"max_columns": model.max_columns})
    line = body[:end]
    try:
        names = next(csv.reader([line.decode("utf-8-sig")]), [])
    except (ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, "request body is not valid UTF-8 CSV", {"reason": type(exc).__name__}) from None
    if not names:
        raise ApiError(422, "the CSV body has no header row", {"data": ["Missing data for required field."]})
    check_names(names, model.feature_names, model.spec.unknown, model.spec.missing)
    return names


def _check_cell_bytes(body: bytes, limit: int) -> None:
    """422 when a run of bytes without comma or line break (it lies inside one cell) is longer than any value the
    model accepts, found with a few memchr calls before a reader copies a 32 MiB cell. A quoted cell holding commas
    escapes this check and meets the per-kind lengths after parsing."""
    start = _long_run(body, limit)
    if start is not None:
        line = body.count(b"\n", 0, start) + 1
        raise ApiError(422, f"a CSV cell on line {line} is longer than {limit} bytes, more than any feature accepts",
                       {"data": [f"Cell longer than {limit} bytes on line {line}."], "max_cell_bytes": limit})


def _long_run(body: bytes, limit: int) -> int | None:
    """Where a run of more than limit bytes free of CELL_ENDS starts, or None. Such a run holds a whole block of
    limit // 2 bytes, so only blocks without any delimiter are looked at more closely, within limit bytes."""
    step = max(1, limit // 2)
    for block in range(0, len(body), step):
        stop = min(block + step, len(body))
        if any(body.find(end, block, stop) >= 0 for end in CELL_ENDS):
            continue
        left = max(body.rfind(end, max(0, block - limit), block) for end in CELL_ENDS)
        if left < 0 and block > limit:
            return block - limit
        rights = [i for i in (body.find(end, stop, stop + limit + 1) for end in CELL_ENDS) if i >= 0]
        right = min(rights) if rights else min(len(body), stop + limit + 1)
        if right - left - 1 > limit:
            return left + 1
    return None


def encode(result: Prediction) -> str:
    """Rows of `prediction` and, for classifiers, `proba_<class>` (quantiles: `quantile_<level>`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if result.probabilities is not None:
        writer.writerow(["prediction"] + [f"proba_{c}" for c in result.columns])
        writer.writerows([label, *probs.values()] for label, probs in zip(result.predictions,
                                                                           result.probabilities))
    elif result.columns is not None:
        writer.writerow([f"quantile_{level}" for level in result.columns])
        writer.writerows(list(row.values()) for row in result.predictions)
    else:
        writer.writerow(["prediction"])
        writer.writerows([value] for value in result.predictions)
    return buffer.getvalue()

