"""GET /openapi.json, generated from the app's routes and marshmallow schemas (apispec), and GET /docs, Swagger UI
served from the swagger-ui-bundle package's files (no CDN: the page works with no internet).

Every route is in the document with its access rule (public, or the scope its credential needs), its request body
schema where it takes one, its success schema, and the error shape as the default response. Each served model's row
schema is a component, and the per-model routes list the served model names. In production those (features, enums,
bounds, model names) need a credential with the model_info scope: without one the document has the routes only.
Swagger UI sends what the user authorised when it loads the document, and loads it again after Authorize/Logout.
"""
from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify, send_from_directory

from app.api import explain
from app.auth import ACCESS, may_see, public
from app.codecs import v2_binary
from app.extensions import served_models
from app.schemas import (ErrorResponse, FeedbackBatch, FeedbackItem, FeedbackResponse, KeyRequest,
                         PredictionResponse, PromoteRequest, TokenRequest)

bp = Blueprint("docs", __name__)
JSON = "application/json"


@bp.get("/openapi.json")
@public
def openapi():
    """The OpenAPI 3 document of this server, with the served models' input schemas (in production: for a
    credential with the model_info scope)."""
    return jsonify(build_spec(current_app, with_models=may_see("model_info")))


@bp.get("/docs")
@bp.get("/docs/", endpoint="docs_slash")  # the address people type as often as /docs
@public
def docs():
    """Swagger UI: browse the API, authorise with an API key, and try a prediction."""
    return current_app.response_class(DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/static/<path:filename>")
@public
def docs_static(filename: str):
    """Swagger UI's own files, from the installed swagger-ui-bundle package."""
    from swagger_ui_bundle import swagger_ui_path
    return send_from_directory(str(swagger_ui_path), filename, max_age=3600)


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>agserve API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    // In production the models' schemas need a credential: the document is loaded with the one authorised here,
    // and loaded again whenever it changes.
    function withCredential(request) {
      if (request.loadSpec && window.ui) {
        const auth = window.ui.authSelectors.authorized().toJS();
        if (auth.ApiKey) request.headers["X-API-Key"] = auth.ApiKey.value;
        else if (auth.Bearer) request.headers["Authorization"] = "Bearer " + auth.Bearer.value;
      }
      return request;
    }
    const reloading = (action, system) => (payload) => {
      const result = action(payload);
      setTimeout(() => system.specActions.download(), 0);
      return result;
    };
    const ReloadOnAuthorize = () => ({statePlugins: {auth: {wrapActions: {
      authorize: reloading, logout: reloading, restoreAuthorization: reloading}}}});
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                                 persistAuthorization: true, requestInterceptor: withCredential,
                                 plugins: [ReloadOnAuthorize]});
  </script>
</body>
</html>
"""


# --- the document -------------------------------------------------------------------------------------------------
def _row_schemas(with_models: bool) -> dict[str, dict[str, Any]]:
    """Served model name → its row schema as an OpenAPI 3.0 component, from the model's feature spec."""
    return {name: slot.model.spec.openapi_schema()
            for name, slot in sorted(served_models().slots.items() if with_models else ())
            if slot.model is not None}


def _component(name: str) -> str:
    return "Row" + re.sub(r"[^A-Za-z0-9]", "_", name)


def build_spec(app: Flask, with_models: bool = True) -> dict[str, Any]:
    """The document; without with_models it names no model, feature, enum or bound of one."""
    description = ("A prediction server for AutoGluon tabular models. Authorise with an API key (X-API-Key) or a JWT "
                   "(Authorization: Bearer).")
    if not with_models:
        description += " The served models' input schemas are shown to a credential with the model_info scope."
    spec = APISpec(title="agserve", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": description})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=ErrorResponse)
    spec.components.schema("Prediction", schema=PredictionResponse)
    spec.components.schema("Explanation", explain.EXPLANATION_SCHEMA)
    rows = _row_schemas(with_models)
    for name, schema in rows.items():
        spec.components.schema(_component(name), schema)
    bodies = _request_bodies(rows, served_models().default_name)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations = {}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(rule, view, method, bodies, rows)
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(rule, view, method: str, bodies: dict[str, Any], rows: dict[str, Any]) -> dict[str, Any]:
    access = getattr(view, ACCESS, "public")
    doc = (view.__doc__ or rule.endpoint).strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", rule.rule).rstrip("_")
        + ("_slash" if rule.rule.endswith("/") else ""),
        "summary": doc[0],
        "tags": [rule.endpoint.partition(".")[0]],
        "responses": {"default": {"description": "An error, in the one JSON error shape.",
                                  "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }
    if access == "public":
        operation["security"] = []
    else:
        operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
        operation["description"] = f"Needs a credential with the `{access}` scope."
    parameters = []
    for argument in rule.arguments:
        schema: dict[str, Any] = {"type": "string"}
        if argument == "name" and rows and rule.endpoint.startswith(("prediction.", "explain.", "v2.",
                                                                     "monitoring.")):
            schema["enum"] = sorted(rows)
        parameters.append({"name": argument, "in": "path", "required": True, "schema": schema})
    if rule.endpoint == "v2.infer":
        parameters.append(v2_binary.OPENAPI_PARAMETER)
    if rule.endpoint.startswith("explain."):
        parameters += explain.PARAMETERS
        operation["description"] += " " + explain.METHOD
    if parameters:
        operation["parameters"] = parameters
    body = bodies.get(rule.endpoint)
    if body is not None and method in ("POST", "PUT", "PATCH"):
        operation["requestBody"] = {"required": True, "content": body}
    success = "201" if rule.endpoint in ("admin.create_key", "admin.issue_token") else "200"
    operation["responses"][success] = {"description": "Success.", "content": _success(rule.endpoint)}
    return operation


def _success(endpoint: str) -> dict[str, Any]:
    if endpoint.startswith("prediction."):
        return {JSON: {"schema": {"$ref": "#/components/schemas/Prediction"}},
                "text/csv": {"schema": {"type": "string"}}}
    if endpoint.startswith("explain."):
        return {JSON: {"schema": {"$ref": "#/components/schemas/Explanation"}},
                "image/svg+xml": {"schema": {"type": "string"}}}
    if endpoint == "v2.infer":
        return {JSON: {"schema": {"type": "object"}}, **v2_binary.OPENAPI_CONTENT}
    if endpoint == "monitoring.feedback":
        return {JSON: {"schema": FeedbackResponse}}
    if endpoint == "metrics.scrape":
        return {"text/plain": {"schema": {"type": "string"}}}
    if endpoint in ("docs.docs", "docs.docs_slash", "docs.docs_static"):
        return {"text/html": {"schema": {"type": "string"}}, "*/*": {"schema": {"type": "string"}}}
    return {JSON: {"schema": {"type": "object"}}}


def _request_bodies(rows: dict[str, Any], default: str) -> dict[str, Any]:
    any_row = {"oneOf": [{"$ref": f"#/components/schemas/{_component(n)}"} for n in rows]} if rows else \
        {"type": "object"}
    default_row = {"$ref": f"#/components/schemas/{_component(default)}"} if default in rows else any_row

    def predict_body(row):
        records = {"type": "object", "required": ["data"], "additionalProperties": False,
                   "properties": {"data": {"type": "array", "minItems": 1, "items": row}}}
        split = {"type": "object", "required": ["data"], "additionalProperties": False, "properties": {"data": {
            "type": "object", "required": ["columns", "data"], "additionalProperties": False,
            "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                           "data": {"type": "array", "items": {"type": "array", "items": {}}}}}}}
        return {JSON: {"schema": {"oneOf": [records, split]}}, "text/csv": {"schema": {"type": "string"}}}

    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES"]},
        "data": {"type": "array", "items": {}}, "parameters": {"type": "object"}}}
    return {
        "prediction.predict_default": predict_body(default_row),
        "prediction.predict_named": predict_body(any_row),
        "explain.explain_default": predict_body(default_row),
        "explain.explain_named": predict_body(any_row),
        "monitoring.feedback": {JSON: {"schema": {"oneOf": [FeedbackItem, FeedbackBatch]}}},
        "admin.create_key": {JSON: {"schema": KeyRequest}},
        "admin.issue_token": {JSON: {"schema": TokenRequest}},
        "admin.promote_version": {JSON: {"schema": PromoteRequest}},
        "v2.infer": {JSON: {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": tensor},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                   "properties": {"name": {"type": "string"}}}}}}},
                     **v2_binary.OPENAPI_CONTENT},
    }
