"""Who may call what: API keys (X-API-Key) or JWTs (Authorization: Bearer), and scopes per route.

Every view is decorated with require_scope(...) or public; a view with neither is refused (deny by default).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, Mapping

from flask import Flask, current_app, g, request

from app import extensions
from app.auth.keys import KeyStore
from app.auth.tokens import TokenRefused, TokenService, scopes_of
from app.config import ConfigError
from app.errors import ApiError
from app.extensions import keystore, token_service
from app.values import SCOPES
ACCESS = "_agserve_access"  # attribute naming a view's access rule: "public" or a scope


@dataclass(frozen=True)
class Principal:
    """The caller: an API key (id) or a JWT subject, with its scopes."""

    kind: str
    id: str
    scopes: frozenset[str]
    expires_at: float | None = None  # a JWT's exp: what it creates may not outlive it

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"


def public(view: Callable) -> Callable:
    """Mark a view as open to everyone (health checks)."""
    setattr(view, ACCESS, "public")
    return view


def require_scope(scope: str) -> Callable[[Callable], Callable]:
    """Refuse the view unless the caller authenticates (401) and holds scope (403)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            principal = authenticate()
            if scope not in principal.scopes:
                raise ApiError(403, f"this credential lacks the {scope!r} scope", {"required_scope": scope})
            limit_rate(principal, scope)
            return view(*args, **kwargs)

        setattr(guarded, ACCESS, scope)
        return guarded
    return decorate


def limit_rate(principal: Principal, scope: str) -> None:
    """429 with Retry-After once the credential has used up its requests for this scope's window."""
    limit = current_app.config[f"RATE_LIMIT_{scope.upper()}"]
    limiter = extensions.rate_limiter()
    if limit is None or limiter is None:
        return
    decision = limiter.hit(f"{scope}:{principal.name}", limit)
    if not decision.allowed:
        from app import metrics
        metrics.RATE_LIMITED.labels(scope).inc()
        raise ApiError(429, f"rate limit exceeded: {limit} for this credential on {scope!r} routes",
                       {"limit": limit.count, "window_seconds": limit.seconds, "retry_after": decision.retry_after},
                       headers={"Retry-After": str(decision.retry_after)})


def authenticate() -> Principal:
    """The caller of this request, or ApiError(401); the body says why only for a JWT whose signature did not
    verify (see TokenService.verify), never for a key."""
    key = request.headers.get("X-API-Key")
    authorization = request.headers.get("Authorization")
    if key is None and authorization is None:
        raise _unauthorized("authentication required: send X-API-Key or Authorization: Bearer <token>")
    principal, refusal = None, "invalid credentials"
    if key is not None and authorization is None:
        record = keystore().verify(key.strip())
        if record is not None:
            principal = Principal("key", record.id, frozenset(record.scopes))
    elif authorization is not None and key is None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if token.startswith("agk_"):  # an API key sent as a bearer token (Prometheus' scrape authorization)
            record = keystore().verify(token)
            principal = Principal("key", record.id, frozenset(record.scopes)) if record else None
        elif token:
            try:
                claims = token_service().verify(token)
                principal = Principal("jwt", str(claims["sub"]), scopes_of(claims), float(claims["exp"]))
            except TokenRefused as refused:
                refusal = str(refused)
    if principal is None:
        raise _unauthorized(refusal)
    g.context.principal = principal
    return principal


def may_see(scope: str) -> bool:
    """On a public route: whether this caller may see what `scope` guards. Outside production everyone may; in
    production only a credential holding the scope (a missing or bad one just gets the public answer)."""
    if current_app.config["ENV"] != "production":
        return True
    if request.headers.get("X-API-Key") is None and request.headers.get("Authorization") is None:
        return False
    try:
        return scope in authenticate().scopes
    except ApiError:
        return False


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="agserve"'})


def init_app(app: Flask) -> None:
    app.extensions[extensions.KEYS] = KeyStore(extensions.database(app), app.config["KEY_PEPPER"],
                                               app.config["KEY_CACHE_SECONDS"], app.config["KEY_GRACE_SECONDS"])
    app.extensions[extensions.TOKENS] = TokenService.from_settings(app.config)
    app.before_request(_deny_undeclared_views)


def _deny_undeclared_views() -> None:
    # A route whose view forgot its decorator is closed, not open.
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    if view is not None and not hasattr(view, ACCESS):
        raise ApiError(403, "this route declares no access rule and is closed")


def undeclared_routes(app: Flask) -> list[str]:
    """Rules whose view has neither @public nor @require_scope."""
    return sorted(rule.rule for rule in app.url_map.iter_rules()
                  if not hasattr(app.view_functions[rule.endpoint], ACCESS))


def check_startup(settings: Mapping[str, Any]) -> None:
    """Refuse unsafe set-ups with one line: production needs auth, real secrets and no debug; JWT keys must be
    sound."""
    from app.auth.secret_strength import weakness

    service = TokenService.from_settings(settings)
    if settings["ENV"] != "production":
        return
    if settings["DEBUG"]:
        raise ConfigError("AGSERVE_DEBUG must be off in production")
    if not settings["KEY_PEPPER"]:
        raise ConfigError("production needs AGSERVE_KEY_PEPPER (a random secret mixed into API-key hashes); make one "
                          "with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    for name in ("KEY_PEPPER", "JWT_SECRET", "CACHE_SECRET"):
        problem = weakness(settings[name]) if settings[name] else None
        if problem:
            raise ConfigError(f"AGSERVE_{name} {problem}")
    if not service.configured and _active_keys(settings) == 0:
        raise ConfigError("production needs authentication: create an API key (agserve keys create) "
                          "or set AGSERVE_JWT_SECRET or AGSERVE_JWT_JWKS_FILE")


def _active_keys(settings: Mapping[str, Any]) -> int:
    from app.db import open_database

    database = open_database(settings)
    try:
        return KeyStore(database, settings["KEY_PEPPER"]).active_count()
    finally:
        database.dispose()  # the gunicorn master must not hand its connections to the workers it forks


def request_source() -> str:
    """The client's address: the peer's, or with AGSERVE_TRUSTED_PROXIES the one its proxies forwarded."""
    return request.remote_addr or "unknown"


def audit(action: str, target: str | None = None, **detail: Any) -> None:
    """Record an admin action: who (the principal), what, when, from where."""
    principal: Principal | None = g.context.principal
    keystore().audit(principal.name if principal else "anonymous", action, target, request_source(), detail)
