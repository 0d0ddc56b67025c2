"""The value rules every protocol shares (JSON records, split, CSV, V2 tensors, feedback, admin bodies): an integer
fits int64, a number fits a finite float64, a date-time lies where pandas can hold it, a string holds only Unicode
scalar values (no lone surrogate), and a client-sent text that stands for a number, a date or a duration is short.
Codecs call these; none has its own."""
from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
FLOAT64_MAX = sys.float_info.max
DATETIME_MIN, DATETIME_MAX = datetime(1677, 9, 22), datetime(2262, 4, 11)  # what pandas' datetime64[ns] can hold
# The ISO 8601 spellings pandas reads as Python does: no week dates, comma fractions or odd date-time separators
# (Python 3.11 reads "2024-W01-1" and "2024-01-02+02:00", then AutoGluon fails on them)
DATETIME_TEXT = re.compile(r"(?:\d{4}-\d{2}-\d{2}|\d{8})(?:[T ][0-9:.]+)?")
NUMBER_TEXT_MAX = 64  # characters of a number, date-time or duration sent as text: more is never a real value
NAME_MAX = 1024  # characters of a column or input name: longer is no feature's name, and is never echoed back
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def json_int(text: str) -> int | float:
    """The standard library's parse_int made to agree with orjson: integers past 64 bits become floats (±inf
    when no float64 holds them), so a 400-digit literal meets the same finiteness rule as 1e999."""
    if len(text) <= 20:
        value = int(text)
        if -(2 ** 63) <= value < 2 ** 64:
            return value
    return float(text)


class LoneSurrogate(ValueError):
    """A string (key or value) holds a UTF-16 surrogate on its own: not a Unicode scalar value, so not UTF-8."""

    def __init__(self, path: str):
        super().__init__(f"a lone UTF-16 surrogate in {path}: strings must be valid Unicode")
        self.path = path


def check_strings(document: Any) -> None:
    """LoneSurrogate naming the first key or string value that holds one; iterative, so depth costs no stack."""
    stack: list[tuple[Any, str]] = [(document, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise LoneSurrogate(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if _LONE_SURROGATE.search(key):
                    raise LoneSurrogate(f"a key of {path}")
                stack.append((item, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


def has_lone_surrogate(text: str) -> bool:
    return _LONE_SURROGATE.search(text) is not None


# The scopes a credential (API key or JWT) may hold; each route requires one of them.
SCOPES = ("predict", "explain", "model_info", "admin", "metrics")

DURATION = re.compile(r"([0-9]{1,12})([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_DAYS = 3650  # ten years: a longer lifetime is a typo, and its timestamp would not fit a date


def parse_duration(text: str) -> int:
    """Seconds in '90s', '15m', '12h' or '30d' (at most ten years); ValueError otherwise."""
    match = DURATION.fullmatch(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{str(text)[:40]!r} is not a duration like 15m, 12h or 30d")
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION_DAYS}d")
    return seconds
