"""JWT on every route that is not explicitly public, and the route -> auth table for /status.

aiohttp-jwt 0.6 is not used, although it was the plan: it matches the scheme with an unanchored
`re.match` (so `BearerX` passes), answers 403 for a bad header, passes neither `leeway` nor
required claims to PyJWT, and logs a traceback per refused token. Each of those is fixed here in
a few lines over PyJWT itself, which is what aiohttp-jwt wraps.
"""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
import structlog
from aiohttp import web

from commpro.appkeys import claims_key, config_key
from commpro.errors import Unauthorized
from commpro.settings import Config

log = structlog.get_logger("commpro.auth")

# Anchored at both ends: a path is public only when it matches one of these in full, so no
# prefix or suffix trick ("/webhook/../api/x", "/healthzX") opens a protected route.
PUBLIC_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/healthz$"), "none"),
    (re.compile(r"^/readyz$"), "none"),
    (re.compile(r"^/webhook(/[a-z]+)+$"), "twilio-signature"),
    # Outbound MMS media for Twilio to fetch: its own HMAC signature in the query.
    (re.compile(r"^/media/[0-9a-f-]{36}$"), "signed-url"),
    # Recorded greetings for Twilio's <Play>: signed the same way.
    (re.compile(r"^/greetings/[0-9a-f-]{36}$"), "signed-url"),
    # Its own optional token (metrics.token), checked by the handler.
    (re.compile(r"^/metrics$"), "metrics-token"),
    # No segment may start with a dot, so "/_sandbox/../status" is not a sandbox path.
    (re.compile(r"^/_sandbox(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+$"), "sandbox-basic"),
)
EVENTS_PATH = "/api/events"
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$")


def auth_for_path(path: str) -> str:
    """What a request to `path` must carry: 'jwt', 'twilio-signature', 'sandbox-basic' or 'none'."""
    for pattern, kind in PUBLIC_PATTERNS:
        if pattern.match(path):
            return kind
    return "jwt"


def decode_token(config: Config, token: str) -> dict[str, Any]:
    """Verify a JWT against the configured key and pinned algorithms; raise Unauthorized."""
    auth = config.auth
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("Malformed token") from None
    alg = header.get("alg")
    if alg not in auth.jwt_algorithms:
        # Includes "none": PyJWT would refuse it too, but say so plainly.
        raise Unauthorized("Token algorithm not accepted")
    # The key follows the algorithm, so a public key is never used as an HMAC secret.
    key = auth.jwt_secret if alg.startswith("HS") else auth.jwt_public_key
    try:
        return jwt.decode(
            token,
            key,
            algorithms=list(auth.jwt_algorithms),
            audience=auth.jwt_audience or None,
            issuer=auth.jwt_issuer or None,
            leeway=auth.leeway_s,
            options={"require": ["exp", "sub"], "verify_aud": bool(auth.jwt_audience)},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"Token lacks the {exc.claim!r} claim") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise Unauthorized("Token not meant for this service") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    if auth_for_path(request.path) != "jwt":
        return await handler(request)
    header = request.headers.get("Authorization")
    if header is None and request.path == EVENTS_PATH and "token" in request.query:
        # Browsers cannot set headers on a WebSocket: the events stream also takes ?token=.
        header = "Bearer " + request.query["token"]
    if header is None:
        _refused(request, "missing")
        raise Unauthorized("Missing Authorization header")
    match = _BEARER.match(header)
    if match is None:
        _refused(request, "scheme")
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    try:
        claims = decode_token(request.config_dict[config_key], match.group(1))
    except Unauthorized as exc:
        _refused(request, exc.message)
        raise
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        _refused(request, "sub")
        raise Unauthorized("Token 'sub' must be a non-empty string")
    request[claims_key] = claims
    return await handler(request)


def _refused(request: web.Request, reason: str) -> None:
    # One line, no traceback, never the token itself.
    log.info("auth_refused", reason=reason, path=request.path, remote=request.remote)


def user_id(request: web.Request) -> str:
    """The caller's user id (the JWT `sub`). Only valid on JWT-protected routes."""
    return request[claims_key]["sub"]


def mint_token(config: Config, user: str, ttl_s: int | None = None) -> str:
    """An HS256 token for local use (`commpro token`, the demo banner, tests)."""
    if not config.auth.jwt_secret:
        raise ValueError("minting a token needs JWT_SECRET (HS256)")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + (ttl_s or config.auth.dev_token_ttl_s)}
    if config.auth.jwt_audience:
        claims["aud"] = config.auth.jwt_audience
    if config.auth.jwt_issuer:
        claims["iss"] = config.auth.jwt_issuer
    alg = next((a for a in config.auth.jwt_algorithms if a.startswith("HS")), "HS256")
    return jwt.encode(claims, config.auth.jwt_secret, algorithm=alg)
