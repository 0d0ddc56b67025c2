"""The OpenAPI document: valid OpenAPI 3, every route in it, generated from the same schemas the server uses."""
from __future__ import annotations

import re

from openapi_spec_validator import validate


def test_the_document_is_valid_openapi_and_lists_every_route(app, client):
    document = client.get("/openapi.json")
    assert document.status_code == 200
    spec = document.json
    validate(spec)  # raises on any violation of the OpenAPI 3.0 schema
    documented = {(method.upper(), path) for path, operations in spec["paths"].items() for method in operations}
    served = {(method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served


def test_security_and_errors_follow_the_routes_access_rules(client):
    spec = client.get("/openapi.json").json
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert {"ApiKey": []} in spec["paths"]["/predict"]["post"]["security"]
    assert "`admin` scope" in spec["paths"]["/admin/keys"]["post"]["description"]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {"error", "details", "request_id"}


def test_each_served_model_has_its_row_schema(app, client):
    spec = client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]
    registry = app.extensions["agserve.models"]
    for name in registry.slots:
        row = schemas["Row" + name]
        assert set(row["properties"]) == set(registry.get(name).feature_names)
    assert spec["paths"]["/models/{name}/predict"]["post"]["parameters"][0]["schema"]["enum"] == sorted(registry.slots)
    key_body = spec["paths"]["/admin/keys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert key_body == {"$ref": "#/components/schemas/KeyRequest"}
    assert set(schemas["KeyRequest"]["required"]) == {"owner", "scopes"}  # read off the marshmallow KeyRequest


def test_docs_page_and_its_assets_are_served_locally(client):
    assert client.get("/docs/").data == client.get("/docs").data  # with or without the trailing slash
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert assets and all(a.startswith("/docs/static/") for a in assets)  # nothing from a CDN
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
