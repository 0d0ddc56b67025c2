"""The Open Inference Protocol's binary tensor data extension, which tritonclient and KServe's InferenceRESTClient
use by default.

A request body is a JSON header of `Inference-Header-Content-Length` bytes followed by the bytes of each input whose
`parameters.binary_data_size` says so, in input order: little-endian, row-major, no padding; BOOL one byte 0 or 1;
BYTES items each a 4-byte little-endian length and that many UTF-8 bytes. `read_request` turns it into the very
document the JSON path parses (each binary input given its `data` list), so one set of checks and value rules judges
both. Every length is checked against the body, and the element count against AGSERVE_MAX_ROWS, before anything is
allocated. Outputs asked for as binary (`parameters.binary_data_output`, overridden per output by its
`parameters.binary_data`) are answered the same way: a JSON header, then their bytes.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from flask import Response, current_app, jsonify, request

from app import jsonio
from app.codecs.envelope import check_columns, parse_json, request_body
from app.errors import ApiError
from app.values import INT64_MAX, NAME_MAX

HEADER = "Inference-Header-Content-Length"
BINARY = "application/octet-stream"
EXTENSION = "binary_tensor_data"
DTYPES = {"BOOL": np.dtype("u1"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
          "INT64": np.dtype("<i8"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
          "UINT64": np.dtype("<u8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
MIMETYPES = ("", BINARY, "application/json")  # Triton's client sends none, KServe's octet-stream
LENGTH = struct.Struct("<I")
OPENAPI_PARAMETER = {"name": HEADER, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0},
                     "description": "Binary tensor data: the JSON header's length in bytes; the inputs' bytes follow."}
OPENAPI_CONTENT = {BINARY: {"schema": {"type": "string", "format": "binary"}}}


def read_request(max_inputs: int) -> dict[str, Any]:
    """The inference request of a binary body, decoded to the JSON path's document; 400 naming the field otherwise.
    More than max_inputs inputs are refused before any is decoded, as the JSON path refuses them before any value."""
    if request.mimetype not in MIMETYPES:
        raise ApiError(400, "binary tensor data needs Content-Type application/octet-stream (or none)",
                       {"field": "Content-Type"})
    text = request.headers[HEADER]
    body = request_body()
    if not (text.isascii() and text.isdigit() and len(text) <= 20 and int(text) <= len(body)):
        raise ApiError(400, f"{HEADER} must be a byte count within the body ({len(body)} bytes)", {"field": HEADER})
    length = int(text)
    document = parse_json(body[:length], constants=("NaN",))  # NaN: a missing number, as in the JSON path
    inputs = document.get("inputs") if isinstance(document, dict) else None
    offset = length
    if isinstance(inputs, list):
        check_columns(len(inputs), max_inputs)
        view = memoryview(body)
        for index, tensor in enumerate(inputs):
            size = _binary_size(tensor, index, len(body) - offset)
            if size is not None:
                inputs[index] = dict(tensor, data=_decode(tensor, index, view[offset:offset + size]))
                offset += size
    if offset != len(body):
        raise ApiError(400, f"{len(body) - offset} bytes after the JSON header belong to no input's binary_data_size",
                       {"field": HEADER})
    return document


def binary_outputs(document: dict[str, Any], wanted: list[str]) -> set[str]:
    """The outputs to answer as binary data: all with parameters.binary_data_output, each as its own binary_data."""
    default = _flag(document.get("parameters") or {}, "binary_data_output", "parameters.binary_data_output")
    chosen = dict.fromkeys(wanted, default)
    for index, output in enumerate(document.get("outputs") or []):
        parameters = output.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise ApiError(400, "an output's parameters must be an object",
                               {"field": f"outputs[{index}].parameters"})
            chosen[output["name"]] = _flag(parameters, "binary_data", f"outputs[{index}].parameters.binary_data",
                                           chosen[output["name"]])
    return {name for name, binary in chosen.items() if binary}


def response(answer: dict[str, Any], binary: set[str]) -> Response:
    """The inference answer: JSON, or a JSON header followed by the bytes of the outputs asked for as binary."""
    if not binary:
        return jsonify(answer)
    chunks = []
    for output in answer["outputs"]:
        if output["name"] in binary:
            raw = _encode(output["datatype"], output.pop("data"))
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    header = orjson.dumps(answer, option=jsonio.OPTIONS)
    sent = current_app.response_class(b"".join([header, *chunks]), mimetype=BINARY)
    sent.headers[HEADER] = str(len(header))
    return sent


def _flag(parameters: dict[str, Any], key: str, field: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{field} must be true or false", {"field": field})
    return value


def _binary_size(tensor: Any, index: int, left: int) -> int | None:
    """The input's binary_data_size (None: its data is JSON), checked against the bytes left in the body."""
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ApiError(400, "an input's parameters must be an object", {"field": f"inputs[{index}].parameters"})
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    field = f"inputs[{index}].parameters.binary_data_size"
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= left:
        raise ApiError(400, f"{field} must be a byte count within the {left} bytes left in the body",
                       {"field": field})
    if "data" in tensor:
        raise ApiError(400, f"input {index} has both data and binary_data_size", {"field": f"inputs[{index}].data"})
    return size


def _decode(tensor: dict[str, Any], index: int, raw: memoryview) -> list[Any]:
    """The flat list of values the JSON path would hold for this tensor: numbers, booleans, strings."""
    name = str(tensor.get("name"))[:NAME_MAX]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != "BYTES" and datatype not in DTYPES:
        raise ApiError(400, f"input {name!r}: datatype {str(datatype)[:40]} has no binary form here",
                       {"field": f"inputs[{index}].datatype", "datatypes": ["BYTES", *DTYPES]})
    count = _element_count(shape, name, index)
    if datatype == "BYTES":
        return _strings(raw, count, name, index)
    dtype = DTYPES[datatype]
    if count * dtype.itemsize != len(raw):
        raise ApiError(400, f"input {name!r}: shape {shape} of {datatype} is {count * dtype.itemsize} bytes, "
                            f"binary_data_size says {len(raw)}",
                       {"field": f"inputs[{index}].parameters.binary_data_size"})
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL":
        if count and array.max() > 1:
            raise ApiError(400, f"input {name!r}: a BOOL byte is 0 or 1", {"field": f"inputs[{index}]"})
        return array.astype(bool).tolist()
    if datatype == "UINT64" and count and array.max() > INT64_MAX:
        at = int(np.argmax(array > INT64_MAX))
        raise ApiError(400, f"input {name!r}: value {at} is beyond int64", {"field": f"inputs[{index}][{at}]"})
    return array.tolist()


def _element_count(shape: Any, name: str, index: int) -> int:
    """The product of the shape, refused once past AGSERVE_MAX_ROWS (a tabular tensor holds one value per row)."""
    limit = current_app.config["MAX_ROWS"]
    if not isinstance(shape, list) or not shape:
        raise ApiError(400, f"input {name!r}: shape must be a list of sizes", {"field": f"inputs[{index}].shape"})
    count = 1
    for size in shape:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ApiError(400, f"input {name!r}: shape must be a list of sizes", {"field": f"inputs[{index}].shape"})
        count *= size
        if count > limit:
            raise ApiError(400, f"input {name!r}: more than {limit} values (AGSERVE_MAX_ROWS rows)",
                           {"field": f"inputs[{index}].shape", "max_rows": limit})
    return count


def _strings(raw: memoryview, count: int, name: str, index: int) -> list[str]:
    """count BYTES items, each a 4-byte little-endian length then that many bytes of UTF-8, filling raw exactly."""
    field = f"inputs[{index}]"
    if count * LENGTH.size > len(raw):
        raise ApiError(400, f"input {name!r}: {count} BYTES items cannot fit in {len(raw)} bytes", {"field": field})
    items, at = [], 0
    for item in range(count):
        if at + LENGTH.size > len(raw):
            raise ApiError(400, f"input {name!r}: BYTES item {item} is cut off", {"field": f"{field}[{item}]"})
        (length,) = LENGTH.unpack_from(raw, at)
        at += LENGTH.size
        if length > len(raw) - at:
            raise ApiError(400, f"input {name!r}: BYTES item {item} is {length} bytes, past the tensor's end",
                           {"field": f"{field}[{item}]"})
        try:
            items.append(str(raw[at:at + length], "utf-8"))  # strict: encoded surrogates are refused too
        except UnicodeDecodeError:
            raise ApiError(400, f"input {name!r}: BYTES item {item} is not valid UTF-8",
                           {"field": f"{field}[{item}]"}) from None
        at += length
    if at != len(raw):
        raise ApiError(400, f"input {name!r}: {len(raw) - at} bytes after its {count} BYTES items",
                       {"field": f"inputs[{index}].parameters.binary_data_size"})
    return items


def _encode(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in data]
        return b"".join(LENGTH.pack(len(item)) + item for item in encoded)
    return np.asarray(data, dtype=DTYPES[datatype]).tobytes()
