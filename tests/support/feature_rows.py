"""Random input rows for the feature-spec properties, in two value spaces, for the six features of the test models.

"Typed" values are what a client following the JSON Schema sends: JSON numbers, booleans, unpadded strings,
date-times in the canonical ISO form (valid or not). On those the JSON Schema must give exactly the server's verdict.
"Lenient" values are the other spellings the server also takes (numeric text, "yes", padded strings, 7-digit
fractions, a space before the time): the schema may refuse them, but anything it accepts the server must accept.
"""
from __future__ import annotations

import math
import sys
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

KINDS = {"num": "numeric", "cnt": "integer", "color": "category", "flag": "boolean", "when": "datetime",
         "note": "text"}


@st.composite
def iso_text(draw, lenient: bool) -> str:
    """A date or date-time in the canonical ISO form, the calendar and the range not necessarily respected."""
    text = f"{draw(st.integers(1600, 2300)):04d}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 31)):02d}"
    if draw(st.integers(0, 9)) == 0:  # the edges of pandas' range
        text = draw(st.sampled_from(["1677-09-21", "1677-09-22", "2262-04-10", "2262-04-11", "2262-04-12"]))
    if draw(st.booleans()):
        text += f"{'T' if not lenient or draw(st.booleans()) else ' '}{draw(st.integers(0, 24)):02d}" \
                f":{draw(st.integers(0, 60)):02d}"
        if draw(st.booleans()):
            text += f":{draw(st.integers(0, 60)):02d}"
            if draw(st.booleans()):
                digits = draw(st.integers(1, 60 if lenient else 6))  # past 64 characters the text is refused
                text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits,
                                                    max_size=digits)))
    if draw(st.integers(0, 7)) == 0:  # a zone (after a bare date too: Python reads "2024-01-02+02:00" as 02:00)
        text += draw(st.sampled_from(["Z", "+02:00", "-00:30"]))
    return text


UNPADDED = st.text(st.characters(exclude_categories=("Cs",)), max_size=12).filter(lambda s: s == s.strip())
SHORT = st.integers(0, 4).flatmap(lambda n: st.text(st.characters(exclude_categories=("Cs", "Zs", "Cc")), min_size=n,
                                                    max_size=n)).filter(lambda s: s == s.strip())
PADDED = st.builds(lambda pad, s, end: pad + s + end, st.sampled_from([" ", "\t", "\u3000"]), UNPADDED,
                   st.sampled_from(["", " ", "\n"]))
INTEGRAL = st.integers(-2 ** 62, 2 ** 62).map(float)
# The kinds' edges, and those of the bounds the tests give an owner's schema.json (tests/inference/test_features.py)
BOUNDARIES = {
    "numeric": [-5, 5.5, -5.000001, 5.500001, 6, 2 ** 70, -sys.float_info.max, sys.float_info.max, 10 ** 400],
    "integer": [-4, -3, 1000, 1001, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 64,
                9.223372036854775e18, 2.0 ** 63, 10 ** 400, 3.5],
    "boolean": [True, False],
    "category": ["red", "green", "", "redder", "redde", "reddest"],
    "datetime": ["1677-09-21T23:59:59.999999", "1677-09-22", "2262-04-10T23:59:59.999999", "2262-04-11",
                 "2262-04-11T00:00:00.000001", "2262-04-11T00:01", "2000-02-29", "1900-02-29", "2100-02-29"],
    "text": ["", "abcd", "abcde", "abcdefghi", "abcdefghij"],
}
# Edges in spellings the JSON Schema does not list: 64 and 65 characters of date-time text
LENIENT_BOUNDARIES = {"datetime": ["2024-01-02T03:04:05." + "0" * 44, "2024-01-02T03:04:05." + "0" * 45]}
BIG_INTS = st.sampled_from([2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 64, 10 ** 400,
                            -(10 ** 400)])


@st.composite
def valid_iso(draw) -> str:
    """A date or date-time pandas can hold, in the canonical ISO form, to a random precision."""
    moment = draw(st.datetimes(datetime(1677, 9, 22), datetime(2262, 4, 10, 23, 59, 59)))
    return moment.isoformat(timespec=draw(st.sampled_from(["minutes", "seconds", "milliseconds",
                                                           "microseconds"])))[:draw(st.sampled_from([10, 64]))]


# Typed values a server would mostly accept, and typed values at and past the rules' edges
PLAUSIBLE = {
    "numeric": st.one_of(st.floats(-5, 5.5), st.integers(-5, 5)),
    "integer": st.one_of(st.integers(-3, 1000), st.integers(-3, 1000).map(float)),
    "boolean": st.booleans(),
    "category": st.sampled_from(["red", "blue", "1", ""]),
    "datetime": valid_iso(),
    "text": SHORT,
}
EDGES = {
    "numeric": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2 ** 70), 2 ** 70),
                         BIG_INTS, st.floats(-6, 6), st.sampled_from(BOUNDARIES["numeric"])),
    "integer": st.one_of(st.integers(-(2 ** 70), 2 ** 70), BIG_INTS, INTEGRAL, st.sampled_from(BOUNDARIES["integer"]),
                         st.floats(allow_nan=False, allow_infinity=False), st.floats(-4, 1001)),
    "boolean": st.booleans(),
    "category": st.one_of(st.sampled_from(["green", "redder", "blue" * 3]), UNPADDED),
    "datetime": st.one_of(iso_text(lenient=False), st.sampled_from(BOUNDARIES["datetime"])),
    "text": st.text(st.characters(exclude_categories=("Cs",)), min_size=3, max_size=11).filter(
        lambda s: s == s.strip()),
}
# Values of another JSON type that no spelling rule lets through (numeric text, 1 for true... are lenient)
SHAPES = st.sampled_from([[1], {"a": 1}, []])
NOT_NUMBERS = st.one_of(st.booleans(), SHAPES)
NOT_STRINGS = st.one_of(st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), SHAPES)
OTHER_TYPES = {"numeric": NOT_NUMBERS, "integer": NOT_NUMBERS,
               "boolean": st.one_of(st.floats(allow_nan=False).filter(lambda v: v not in (0, 1)), SHAPES),
               "category": NOT_STRINGS, "datetime": NOT_STRINGS, "text": NOT_STRINGS}
LENIENT = {
    "numeric": st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr), st.integers().map(str),
                         st.sampled_from(["nan", "inf", "-Infinity", "1e999", "1_000", " 2 ", "0x10", "1" * 70]),
                         st.just(float("nan")), st.just(float("inf"))),
    "integer": st.one_of(st.integers(-(2 ** 66), 2 ** 66).map(str), st.sampled_from(["3.0", " 7 ", "3.5", "1e3",
                                                                                     "9" * 70]),
                         st.just(float("nan")), st.just(-(2.0 ** 63))),
    "boolean": st.sampled_from(["true", "False", "yes", "off", "1", "0", "T", "on", 1, 0, 1.0, "maybe"]),
    "category": PADDED,
    "datetime": st.one_of(iso_text(lenient=True), PADDED, st.sampled_from(["20240102", "2024-01-02T03",
                                                                           "2024-W01-1", "2024-01-02T03:04:05,5",
                                                                           "2024-1-2", "2024-01-02x03:04"])),
    "text": PADDED,
}


@st.composite
def rows(draw, lenient: bool = False, max_rows: int = 3) -> list[dict[str, Any]]:
    """1 to max_rows rows of plausible values (or nulls), then mostly one or two values replaced by one at an edge, of
    another type or (lenient) in another spelling, so that a refusal seldom hides another; now and then a row lacks
    a feature or has an unknown key."""
    drawn = [{name: None if draw(st.integers(0, 19)) == 0 else draw(PLAUSIBLE[kind]) for name, kind in KINDS.items()}
             for _ in range(draw(st.integers(1, max_rows)))]
    odd = {kind: st.one_of(EDGES[kind], EDGES[kind], OTHER_TYPES[kind], *([LENIENT[kind]] * 2 if lenient else []))
           for kind in set(KINDS.values())}
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        name = draw(st.sampled_from(list(KINDS)))
        drawn[draw(st.integers(0, len(drawn) - 1))][name] = draw(odd[KINDS[name]])
    shape = draw(st.integers(0, 19))
    if shape == 0:
        drawn[0].pop(draw(st.sampled_from(list(KINDS))))
    elif shape == 1:
        drawn[-1]["surprise"] = 1
    return drawn


def schema_can_judge(drawn: list[dict[str, Any]]) -> bool:
    """False for rows a JSON Schema cannot judge: NaN and Infinity are no JSON values; and orjson reads integer
    literals below -2**63 as the float -2**63, so the server refuses that float for an integer (it accepts the int
    -2**63), where JSON Schema, for which 1.0 and 1 are one number, cannot tell them apart."""
    return not any(isinstance(v, float) and (not math.isfinite(v) or (KINDS.get(k) == "integer" and v == -(2 ** 63)))
                   for row in drawn for k, v in row.items())
