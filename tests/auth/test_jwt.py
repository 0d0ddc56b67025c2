"""Forged and broken JWTs are refused; genuine ones (HS256, RS256, ES256, rotated kids) are accepted."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.tokens import AUDIENCE, HS1, ISSUER, LEEWAY, SECRET, b64, claims, hs_token


def raw_token(header: dict, payload: dict, signer) -> str:
    """A token assembled by hand, as an attacker would: signer(signing_input) -> signature bytes."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signer(signing_input.encode()))}"


def hmac_with(secret: bytes):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def status(app, token: str) -> int:
    return app.test_client().get("/models", headers={"Authorization": f"Bearer {token}"}).status_code


def forgeries(signing_keys):
    rs_public = signing_keys["rs1"].public_key()
    pem = rs_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = jwt.algorithms.RSAAlgorithm.to_jwk(rs_public).encode()
    rs_private = signing_keys["rs1"]
    now = int(time.time())
    good = hs_token()
    header, payload, signature = good.split(".")
    return {
        "alg none with kid": raw_token({"alg": "none", "kid": "rs1"}, claims(), lambda d: b""),
        "alg none without kid": raw_token({"alg": "none"}, claims(), lambda d: b""),
        "alg NONE uppercase": raw_token({"alg": "NONE"}, claims(), lambda d: b""),
        "HS256 signed with the RS public key (PEM)": raw_token({"alg": "HS256", "kid": "rs1"}, claims(), hmac_with(pem)),
        "HS256 signed with the RS public key (JWK)": raw_token({"alg": "HS256", "kid": "rs1"}, claims(),
                                                               hmac_with(jwk_json)),
        "HS256 signed with the RS public key, no kid": raw_token({"alg": "HS256"}, claims(), hmac_with(pem)),
        "wrong HMAC secret": hs_token(secret="x" * 40),
        "RS256 from another private key": jwt.encode(claims(), signing_keys["other_rsa"], algorithm="RS256",
                                                     headers={"kid": "rs1"}),
        "RS256 key used under the ES kid": jwt.encode(claims(), rs_private, algorithm="RS256",
                                                      headers={"kid": "es1"}),
        "RS256 token claiming the HS kid": jwt.encode(claims(), rs_private, algorithm="RS256", headers={"kid": "hs1"}),
        "expired": hs_token(exp=now - LEEWAY - 60),
        "nbf in the future": hs_token(nbf=now + LEEWAY + 60),
        "iat in the future": hs_token(iat=now + LEEWAY + 60),
        "missing exp": hs_token(exp=None),
        "missing iat": hs_token(iat=None),
        "missing sub": hs_token(sub=None),
        "missing aud": hs_token(aud=None),
        "missing iss": hs_token(iss=None),
        "wrong aud": hs_token(aud="someone-else"),
        "wrong iss": hs_token(iss="evil-issuer"),
        "unknown kid": hs_token(secret=HS1, kid="hs-retired"),
        "kid path traversal": hs_token(secret=HS1, kid="../x"),
        "kid not a string": raw_token({"alg": "HS256", "kid": 7}, claims(), hmac_with(HS1)),
        "unknown crit header": jwt.encode(claims(), SECRET, algorithm="HS256",
                                          headers={"crit": ["x-magic"], "x-magic": True}),
        "truncated signature": f"{header}.{payload}.{signature[:-6]}",
        "signature stripped": f"{header}.{payload}.",
        "payload swapped under a valid signature": f"{header}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}",
        "two segments only": f"{header}.{payload}",
    }


def test_at_least_fifteen_forged_or_broken_tokens_are_refused(auth_app, signing_keys):
    cases = forgeries(signing_keys)
    assert len(cases) >= 15
    results = {name: status(auth_app, token) for name, token in cases.items()}
    assert results == {name: 401 for name in cases}


def test_genuine_tokens_of_every_configured_key_are_accepted(auth_app, signing_keys):
    tokens = {
        "HS256, no kid (AGSERVE_JWT_SECRET)": hs_token(),
        "HS256, kid hs1 (JWKS)": hs_token(secret=HS1, kid="hs1"),
        "RS256, kid rs1": jwt.encode(claims(), signing_keys["rs1"], algorithm="RS256", headers={"kid": "rs1"}),
        "ES256, kid es1": jwt.encode(claims(), signing_keys["es1"], algorithm="ES256", headers={"kid": "es1"}),
        "scope as a list": hs_token(scope=["model_info"]),
    }
    assert {name: status(auth_app, token) for name, token in tokens.items()} == {name: 200 for name in tokens}


def test_leeway_boundary(auth_app):
    time.sleep(1 - time.time() % 1)  # start of a second, so both checks happen within it
    now = int(time.time())
    refused = hs_token(exp=now - LEEWAY - 1, iat=now - 600)
    accepted = hs_token(exp=now - LEEWAY + 1, iat=now - 600)
    assert status(auth_app, refused) == 401
    assert status(auth_app, accepted) == 200


def test_issued_tokens_work_and_respect_the_maximum_lifetime(auth_app):
    store = auth_app.extensions["agserve.keys"]
    admin, _ = store.create("admin", ["admin"])
    client = auth_app.test_client()
    response = client.post("/admin/tokens", json={"sub": "svc", "scopes": ["model_info"], "ttl": "30d"},
                           headers={"X-API-Key": admin})
    assert response.status_code == 201
    body = response.get_json()
    decoded = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert decoded["exp"] - decoded["iat"] == 3600  # capped at JWT_MAX_TTL
    assert decoded["scope"] == "model_info"
    assert status(auth_app, body["token"]) == 200
    assert client.post("/predict", json={"data": [{}]},
                       headers={"Authorization": f"Bearer {body['token']}"}).status_code == 403


def test_public_key_only_servers_cannot_issue_tokens(repository_path, tmp_path, jwks_file):
    from tests.support.apps import build_app, client_with_key

    document = json.loads(jwks_file.read_text())
    document["keys"] = [k for k in document["keys"] if k["kty"] != "oct"]
    public_only = tmp_path / "jwks.json"
    public_only.write_text(json.dumps(document))
    app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary",
                    JWT_JWKS_FILE=str(public_only), JWT_ALGORITHMS="RS256,ES256")
    response = client_with_key(app).post("/admin/tokens", json={"sub": "x", "scopes": ["predict"]})
    assert response.status_code == 409 and "no HS256 secret" in response.get_json()["error"]


def test_issuing_tokens_without_a_secret_is_409_and_says_how_to_turn_it_on(repository_path, tmp_path):
    from tests.support.apps import build_app, client_with_key

    app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary")
    response = client_with_key(app).post("/admin/tokens", json={"sub": "x", "scopes": ["predict"]})
    assert response.status_code == 409
    assert response.get_json()["error"] == (
        "token issuing is off: no HS256 secret is configured (set AGSERVE_JWT_SECRET, at least 32 bytes, or add an "
        "HS256 key to AGSERVE_JWT_JWKS_FILE)")


def test_a_token_signed_with_another_secret_is_told_only_that_its_signature_did_not_verify(auth_app):
    other_secret = hs_token(secret="o" * 40)  # e.g. `token issue` run with another AGSERVE_JWT_SECRET
    expired_and_forged = hs_token(secret="o" * 40, exp=int(time.time()) - 3600)
    for token in (other_secret, expired_and_forged):
        response = auth_app.test_client().get("/models", headers={"Authorization": f"Bearer {token}"})
        body = response.get_json()
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="agserve"'
        assert body["error"] == "invalid credentials: the token's signature did not verify"
        assert set(body) == {"error", "details", "request_id"} and not body["details"]
    # A genuinely signed token that fails for another reason learns nothing more than before.
    expired = hs_token(exp=int(time.time()) - 3600)
    assert auth_app.test_client().get("/models", headers={"Authorization": f"Bearer {expired}"}).get_json()[
        "error"] == "invalid credentials"


@pytest.mark.parametrize("settings, says", [
    ({"JWT_SECRET": "short-secret"}, "AGSERVE_JWT_SECRET must be at least 32 bytes"),
    ({"JWT_SECRET": "s" * 40, "JWT_ALGORITHMS": "RS256"}, "does not allow HS256"),
    ({"JWT_JWKS_FILE": "/nonexistent/jwks.json"}, "AGSERVE_JWT_JWKS_FILE cannot be read"),
])
def test_unsound_jwt_settings_stop_start_up(settings, says, tmp_path):
    from app.config import ConfigError
    from tests.support.apps import build_app

    with pytest.raises(ConfigError, match=says):
        build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(tmp_path), **settings)


def test_private_keys_in_the_jwks_are_refused(tmp_path, signing_keys):
    from app.config import ConfigError
    from tests.support.apps import build_app

    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_keys["rs1"]))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**private, "kid": "rs1", "alg": "RS256"}]}))
    with pytest.raises(ConfigError, match="is private"):
        build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(tmp_path), JWT_JWKS_FILE=str(path),
                  JWT_ALGORITHMS="RS256")
