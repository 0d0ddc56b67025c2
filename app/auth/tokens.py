"""JWT verification (and, with an HS256 secret, issuing). Algorithms come from settings, never from the token."""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

import jwt

from app.config import ConfigError

REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]
MIN_HMAC_BYTES = 32
DEFAULT_KID = None  # the key used for tokens without a kid header (AGSERVE_JWT_SECRET)
BAD_SIGNATURE = "invalid credentials: the token's signature did not verify"


class TokenRefused(Exception):
    """A refused token; the message is safe to show the caller (it names no key, claim or setting)."""


class TokenService:
    def __init__(self, keys: dict[str | None, tuple[str, Any]], algorithms: tuple[str, ...], audience: str,
                 issuer: str, leeway: int, max_ttl: int):
        self.keys = keys
        self.algorithms = algorithms
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.max_ttl = max_ttl

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "TokenService":
        """Keys from AGSERVE_JWT_SECRET (no kid) and AGSERVE_JWT_JWKS_FILE (each with kid and alg)."""
        algorithms = settings["JWT_ALGORITHMS"]
        keys: dict[str | None, tuple[str, Any]] = {}
        secret = settings["JWT_SECRET"]
        if secret:
            if len(secret.encode()) < MIN_HMAC_BYTES:
                raise ConfigError(f"AGSERVE_JWT_SECRET must be at least {MIN_HMAC_BYTES} bytes")
            keys[DEFAULT_KID] = ("HS256", secret.encode())
        if settings["JWT_JWKS_FILE"]:
            keys.update(_read_jwks(Path(settings["JWT_JWKS_FILE"])))
        for kid, (algorithm, _) in keys.items():
            if algorithm not in algorithms:
                name = f"key {kid!r}" if kid else "AGSERVE_JWT_SECRET"
                raise ConfigError(f"AGSERVE_JWT_ALGORITHMS does not allow {algorithm}, the algorithm of {name}")
        return cls(keys, algorithms, settings["JWT_AUDIENCE"], settings["JWT_ISSUER"], settings["JWT_LEEWAY"],
                   settings["JWT_MAX_TTL"])

    @property
    def configured(self) -> bool:
        return bool(self.keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; TokenRefused for anything forged, expired, mis-addressed or malformed.

        Only a token signed with another key (e.g. another AGSERVE_JWT_SECRET) is told why: the commonest set-up
        mistake, and the signature check runs before any claim is read, so the answer reveals nothing else."""
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid", DEFAULT_KID)
            if kid is not None and not isinstance(kid, str):
                raise TokenRefused("invalid credentials")
            entry = self.keys.get(kid)
            # Each key is bound to one algorithm: an RS256 public key can never verify an HS256 token.
            if entry is None or header.get("alg") != entry[0]:
                raise TokenRefused("invalid credentials")
            algorithm, key = entry
            return jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                              leeway=self.leeway, options={"require": REQUIRED_CLAIMS, "strict_aud": True})
        except jwt.InvalidSignatureError:
            raise TokenRefused(BAD_SIGNATURE) from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenRefused("invalid credentials") from None

    def signing_key(self) -> tuple[str | None, bytes] | None:
        """The HS256 key tokens are issued with: AGSERVE_JWT_SECRET, else the first HS256 key of the JWKS."""
        for kid, (algorithm, key) in self.keys.items():
            if algorithm == "HS256":
                return kid, key
        return None

    def issue(self, subject: str, scopes: list[str], ttl: int) -> tuple[str, int]:
        """A signed token and its expiry (unix time); the ttl is capped by AGSERVE_JWT_MAX_TTL."""
        signing = self.signing_key()
        if signing is None:
            raise LookupError("no HS256 secret is configured")
        kid, key = signing
        now = int(time.time())
        expires = now + min(ttl, self.max_ttl)
        claims = {"sub": subject, "scope": " ".join(scopes), "aud": self.audience, "iss": self.issuer,
                  "iat": now, "exp": expires, "jti": secrets.token_hex(8)}
        headers = {"kid": kid} if kid else None
        return jwt.encode(claims, key, algorithm="HS256", headers=headers), expires


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from the `scope` claim: a space-separated string (RFC 8693) or a list of strings."""
    value = claims.get("scope", "")
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    return frozenset()


def _read_jwks(path: Path) -> dict[str, tuple[str, Any]]:
    try:
        document = json.loads(path.read_text())
        keys = {}
        for entry in document["keys"]:
            if not entry.get("kid") or not entry.get("alg"):
                raise ConfigError(f"AGSERVE_JWT_JWKS_FILE: every key needs a kid and an alg ({path})")
            jwk = jwt.PyJWK(entry, algorithm=entry["alg"])
            if entry["alg"].startswith("HS") and len(jwk.key) < MIN_HMAC_BYTES:
                raise ConfigError(f"AGSERVE_JWT_JWKS_FILE: HMAC key {entry['kid']!r} is under {MIN_HMAC_BYTES} bytes")
            if entry["kty"] in ("RSA", "EC") and "d" in entry:
                raise ConfigError(f"AGSERVE_JWT_JWKS_FILE: key {entry['kid']!r} is private; give the public key only")
            keys[entry["kid"]] = (entry["alg"], jwk.key)
        return keys
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"AGSERVE_JWT_JWKS_FILE cannot be read ({path}): {exc}") from None
