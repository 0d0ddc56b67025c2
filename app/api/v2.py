"""The Open Inference Protocol (KServe V2) over REST, for clients of KServe, Triton and MLServer.

Tabular convention (as KServe's AutoGluon runtime): one input tensor per feature, shape [n] or [n, 1], datatype from
the feature's kind (FP64 numeric, INT64 integer, BOOL boolean, BYTES category/text/date-time); a missing value is
null, NaN (FP64) or "" (BYTES). Outputs: `predictions` (for quantile models [n, levels]) and, for classifiers, one
FP64 `proba_<label>` per class. Predictions take the same path as POST /predict: validation, cache, batching,
prediction log, monitoring. Errors keep the house shape, whose "error" string is what the protocol asks for, with
the protocol's statuses (400 for anything wrong with the request). Binary tensor data (the protocol's extension) is
decoded into the same request document, and binary outputs encoded, by v2_binary.
"""
from __future__ import annotations

import math
import re
import weakref
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from app.api import request_context
from app.auth import public, require_scope
from app.codecs import v2_binary
from app.codecs.envelope import check_columns, check_rows, parse_json, request_body
from app.errors import ApiError, refusal
from app.extensions import data_plane, served_models
from app.inference.errors import ServingError
from app.inference.served import CLASSIFICATION, Prediction, ServedModel
from app.inference.tables import Table
from app.values import NAME_MAX

bp = Blueprint("v2", __name__, url_prefix="/v2")
DATATYPES = {"numeric": "FP64", "integer": "INT64", "boolean": "BOOL", "category": "BYTES", "text": "BYTES",
             "datetime": "BYTES"}
ACCEPTED = {"FP64": {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"},
            "INT64": {"INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8", "FP64", "FP32"},
            "BOOL": {"BOOL"}, "BYTES": {"BYTES"}}
V2_STATUS = {413: 400, 415: 400, 422: 400}  # the protocol knows 400, 404 and 503
_DESCRIBED: "weakref.WeakKeyDictionary[ServedModel, list]" = weakref.WeakKeyDictionary()  # gone with the version


@bp.errorhandler(ServingError)
def _protocol_status(error: ServingError):
    """The house error shape with the protocol's status: 400 for anything wrong with the request."""
    return refusal(error, V2_STATUS.get(error.status, error.status))


@bp.get("")
@require_scope("model_info")
def server_metadata():
    """Server metadata: name, version, extensions."""
    try:
        version = package_version("agserve")
    except PackageNotFoundError:  # running from a checkout that was not pip-installed
        version = "0"
    return jsonify({"name": "agserve", "version": version, "extensions": [v2_binary.EXTENSION]})


@bp.get("/health/live")
@public
def server_live():
    """The server is live (public)."""
    return jsonify({"live": True})


@bp.get("/health/ready")
@public
def server_ready():
    """The server is ready: every served model is loaded in this worker (public)."""
    ready = served_models().ready
    return jsonify({"ready": ready}), 200 if ready else 503


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
@require_scope("model_info")
def model_metadata(name: str, version: str | None = None):
    """Model metadata: versions, input tensors (one per feature) and output tensors."""
    model = _model(name, version)
    return jsonify({"name": model.name, "versions": [model.version], "platform": "autogluon",
                    "inputs": [{"name": f["name"], "datatype": DATATYPES[f["kind"]], "shape": [-1]}
                               for f in model.features],
                    "outputs": outputs_of(model)})


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
@public
def model_ready(name: str, version: str | None = None):
    """The model (at that version) is loaded and ready (public)."""
    model = _model(name, version)
    return jsonify({"name": model.name, "ready": True})


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
@require_scope("predict")
def infer(name: str, version: str | None = None):
    """Inference: one input tensor per feature; outputs `predictions` and `proba_<label>`."""
    plane, context = data_plane(), request_context()
    model = plane.resolve(name, context, version)
    with context.step("decode"):
        document = _read_request(model)
        table = decode_inputs(model, document.get("inputs"), current_app.config["MAX_ROWS"])
    wanted = _requested_outputs(model, document.get("outputs"))  # refused before the prediction is logged
    binary = v2_binary.binary_outputs(document, wanted)
    result = plane.infer(name, table, context)
    return v2_binary.response(encode_response(model, result, document, wanted), binary)


# --- the tabular convention -------------------------------------------------------------------------------------
def proba_names(classes: list[str]) -> dict[str, str]:
    """Class label → output name `proba_<label>`, sanitised to an identifier and unique."""
    return dict(_proba_names(tuple(classes)))


@lru_cache(maxsize=256)
def _proba_names(classes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Worked out once per set of classes: a regex per class costs more than the rest of a small answer."""
    names: dict[str, str] = {}
    for label in classes:
        base = "proba_" + (re.sub(r"\W", "_", str(label)) or "_")
        candidate, n = base, 2
        while candidate in names.values():
            candidate, n = f"{base}_{n}", n + 1
        names[label] = candidate
    return tuple(names.items())


def outputs_of(model: ServedModel) -> list[dict[str, Any]]:
    """The model's output tensors, described once per loaded version (every inference reads them twice)."""
    described = _DESCRIBED.get(model)
    if described is None:
        described = _DESCRIBED[model] = _describe_outputs(model)
    return described


def _describe_outputs(model: ServedModel) -> list[dict[str, Any]]:
    manifest = model.manifest
    if model.problem_type in CLASSIFICATION:
        classes = [str(c) for c in manifest["class_labels"]]
        numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in manifest["class_labels"])
        return [{"name": "predictions", "datatype": "INT64" if numeric else "BYTES", "shape": [-1]}] + \
            [{"name": n, "datatype": "FP64", "shape": [-1]} for n in proba_names(classes).values()]
    if model.problem_type == "quantile":
        return [{"name": "predictions", "datatype": "FP64", "shape": [-1, len(manifest["quantile_levels"])]}]
    return [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]


def _model(name: str, version: str | None) -> ServedModel:
    return served_models().get(name, version)


def _read_request(model: ServedModel) -> dict[str, Any]:
    """The inference request; JSON with or without a content type (Triton's client sends none), NaN allowed."""
    if v2_binary.HEADER in request.headers:
        document = v2_binary.read_request(model.max_columns)
    elif request.mimetype not in ("", "application/json"):
        raise ApiError(400, f"Content-Type must be application/json, or binary tensor data with {v2_binary.HEADER}")
    else:
        document = parse_json(request_body(), constants=("NaN",))  # NaN: a missing number, as numpy clients send it
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise ApiError(400, 'an inference request is a JSON object with a non-empty "inputs" list')
    if "id" in document and not isinstance(document["id"], str):
        raise ApiError(400, '"id" must be a string')
    if "parameters" in document and not isinstance(document["parameters"], dict):
        raise ApiError(400, '"parameters" must be an object')
    return document


def decode_inputs(model: ServedModel, inputs: list[Any], max_rows: int) -> Table:
    """The request's input tensors (one per feature) as a table; 400 for anything the convention refuses."""
    kinds = {f["name"]: f["kind"] for f in model.features}
    check_columns(len(inputs), model.max_columns)
    columns: dict[str, list[Any]] = {}
    rows = None
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str) or len(tensor["name"]) > NAME_MAX:
            raise ApiError(400, f"each input needs a name (at most {NAME_MAX} characters), shape, datatype and data")
        name = tensor["name"]
        if name not in kinds:
            if current_app.config["UNKNOWN_FIELDS"] == "exclude":
                continue
            raise ApiError(400, f"unknown input {name!r}: the inputs are the model's features",
                           {"features": list(kinds)})
        if name in columns:
            raise ApiError(400, f"input {name!r} is given twice")
        values = _tensor_values(tensor, DATATYPES[kinds[name]])
        if rows is None:
            rows = len(values)
            check_rows(rows, max_rows, status=400)
        elif len(values) != rows:
            raise ApiError(400, f"input {name!r} has {len(values)} rows, the others {rows}")
        columns[name] = values
    missing = [name for name in kinds if name not in columns]
    if missing and current_app.config["MISSING_FEATURES"] == "raise":
        raise ApiError(400, f"missing inputs: {', '.join(missing)}", {"missing": missing})
    if not rows:
        raise ApiError(400, "the inputs hold no rows")
    for name in missing:
        columns[name] = [None] * rows
    return Table(columns, rows)


def _tensor_values(tensor: dict[str, Any], expected: str) -> list[Any]:
    name, shape, datatype, data = tensor["name"], tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if datatype not in ACCEPTED[expected]:
        raise ApiError(400, f"input {name!r} must be {expected}, not {str(datatype)[:40]}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape) or len(shape) not in (1, 2) or \
            (len(shape) == 2 and shape[1] != 1):
        raise ApiError(400, f"input {name!r}: shape must be [n] or [n, 1]")
    flat = _flatten(data, name, nested=len(shape) == 2)
    if len(flat) != shape[0]:
        raise ApiError(400, f"input {name!r}: shape {shape} but {len(flat)} values")
    if expected == "BYTES":
        if not all(v is None or isinstance(v, str) for v in flat):
            raise ApiError(400, f"input {name!r}: BYTES data must be strings")
        return [None if v is None or v == "" else v for v in flat]
    if expected == "BOOL":
        if not all(v is None or isinstance(v, bool) for v in flat):
            raise ApiError(400, f"input {name!r}: BOOL data must be true or false")
        return flat
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in flat):
        raise ApiError(400, f"input {name!r}: {datatype} data must be numbers")
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in flat]


def _flatten(data: Any, name: str, nested: bool) -> list[Any]:
    """The values of a [n] tensor, or of a [n, 1] one given flat or nested; in a [n] tensor a list is a wrong value."""
    if not isinstance(data, list):
        raise ApiError(400, f"input {name!r}: data must be a list")
    if nested and data and all(isinstance(v, list) for v in data):  # row-major nesting of an [n, 1] tensor
        if not all(len(v) == 1 for v in data):
            raise ApiError(400, f"input {name!r}: nested data must be [[value], ...]")
        return [v[0] for v in data]
    return data


def _requested_outputs(model: ServedModel, requested: Any) -> list[str]:
    available = [o["name"] for o in outputs_of(model)]
    if requested is None:
        return available
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise ApiError(400, '"outputs" must be a list of {"name": ...}')
    names = [o["name"] for o in requested]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ApiError(400, f"unknown outputs: {', '.join(unknown[:10])[:1000]}", {"outputs": available})
    return names


def encode_response(model: ServedModel, result: Prediction, document: dict[str, Any],
                    wanted: list[str]) -> dict[str, Any]:
    """The inference response: the outputs the request asked for (all by default), and its id if it gave one."""
    answer = {"model_name": model.name, "model_version": model.version, "outputs": _outputs(model, result, wanted)}
    if "id" in document:
        answer["id"] = document["id"]
    return answer


def _outputs(model: ServedModel, result: Prediction, wanted: list[str]) -> list[dict[str, Any]]:
    n = len(result.predictions)
    described = {o["name"]: o for o in outputs_of(model)}
    tensors = {}
    if model.problem_type == "quantile":
        levels = result.columns
        tensors["predictions"] = ([row[level] for row in result.predictions for level in levels], [n, len(levels)])
    else:
        tensors["predictions"] = (result.predictions, [n])
    if result.probabilities is not None:
        for label, output in proba_names(result.columns).items():
            tensors[output] = ([row[label] for row in result.probabilities], [n])
    out = []
    for name in wanted:
        data, shape = tensors[name]
        datatype = described[name]["datatype"]
        if datatype == "BYTES":
            data = [str(v) for v in data]
        elif datatype == "FP64":
            data = np.asarray(data, dtype="float64").tolist()
        out.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
    return out

