"""The auth tests' JWT settings and HS256 tokens signed with them."""
from __future__ import annotations

import base64
import time

import jwt

SECRET = "s" * 40  # AGSERVE_JWT_SECRET: tokens without kid
HS1 = b"h" * 48  # JWKS oct key "hs1"
LEEWAY = 10
AUDIENCE, ISSUER = "agserve-tests", "issuer-tests"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides):
    now = int(time.time())
    base = {"sub": "tester", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300,
            "scope": "predict model_info admin"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret=SECRET, kid=None, **overrides) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return jwt.encode(claims(**overrides), key, algorithm="HS256", headers={"kid": kid} if kid else None)
