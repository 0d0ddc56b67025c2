"""GET /models/<name>/schema and the model's OpenAPI component judge random rows as POST /models/<name>/predict does
(Hypothesis; tests/support/feature_rows.py draws the rows): exactly, on values of the types the schema declares; and
whatever they accept, in any spelling, the server accepts."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator

from tests.support.feature_rows import rows, schema_can_judge

CONFIGURED = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def verdicts(client, drawn: list[dict[str, Any]]) -> tuple[bool, bool, bool]:
    """(the JSON Schema accepts every row, the OpenAPI component does, the server answers 200)."""
    assume(schema_can_judge(drawn))
    # the standard library writes integers past 64 bits, as any client may send them
    response = client.post("/models/binary/predict", data=json.dumps({"data": drawn}), content_type="application/json")
    assert response.status_code in (200, 422), (response.status_code, response.get_json(), repr(drawn))
    json_schema, component = client.json_schema, client.component
    return (all(json_schema.is_valid(row) for row in drawn), all(component.is_valid(row) for row in drawn),
            response.status_code == 200)


def schemas(client):
    client.json_schema = Draft202012Validator(client.get("/models/binary/schema").get_json()["row"])
    client.component = OAS30Validator(client.get("/openapi.json").get_json()["components"]["schemas"]["Rowbinary"])
    return client


def test_the_served_schemas_give_the_servers_verdict_on_typed_rows(client):
    schemas(client)
    seen = {True: 0, False: 0}

    @CONFIGURED
    @given(rows())
    def check(drawn):
        by_json_schema, by_component, accepted = verdicts(client, drawn)
        assert by_json_schema == accepted, repr(drawn)
        # OpenAPI 3.0's integer excludes 3.0, which the server takes for 3: stricter, never looser
        assert by_component == accepted or (accepted and any(isinstance(row.get("cnt"), float) for row in drawn)), \
            repr(drawn)
        seen[accepted] += 1

    check()
    assert min(seen.values()) > 20, seen  # both verdicts were reached often


def test_what_the_served_schemas_accept_the_server_accepts_in_any_spelling(client):
    schemas(client)

    @CONFIGURED
    @given(rows(lenient=True))
    def check(drawn):
        by_json_schema, by_component, accepted = verdicts(client, drawn)
        assert accepted or not (by_json_schema or by_component), repr(drawn)

    check()
