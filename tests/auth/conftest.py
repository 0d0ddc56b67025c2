"""An app with every kind of credential configured: API keys, an HS256 secret, and a JWKS of HS/RS/ES keys."""
from __future__ import annotations

import json
import shutil

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.apps import build_app
from tests.support.tokens import AUDIENCE, HS1, ISSUER, LEEWAY, SECRET, b64


@pytest.fixture(scope="session")
def signing_keys():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {"rs1": rsa_key, "es1": ec_key, "other_rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory, signing_keys):
    rs_public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_keys["rs1"].public_key()))
    es_public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signing_keys["es1"].public_key()))
    document = {"keys": [
        {"kty": "oct", "kid": "hs1", "alg": "HS256", "k": b64(HS1)},
        {**rs_public, "kid": "rs1", "alg": "RS256"},
        {**es_public, "kid": "es1", "alg": "ES256"},
    ]}
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="session")
def auth_app(repository_path, tmp_path_factory, jwks_file):
    # A private repository whose "binary" has a second version, so promote and rollback can succeed here.
    private = tmp_path_factory.mktemp("auth-models") / "models"
    shutil.copytree(repository_path, private)
    shutil.copytree(private / "binary" / "1", private / "binary" / "2")
    return build_app(tmp_path_factory.mktemp("auth") / "auth.sqlite3", MODEL_REPOSITORY=str(private),
                     RELOAD_INTERVAL=0,
                     MODELS="binary", JWT_SECRET=SECRET, JWT_JWKS_FILE=str(jwks_file),
                     JWT_ALGORITHMS="HS256,RS256,ES256", JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER,
                     JWT_LEEWAY=LEEWAY)
