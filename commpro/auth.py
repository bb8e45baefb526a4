"""JWT on every route that is not explicitly public, and the route -> auth table for /status.

aiohttp-jwt 0.6 is not used, although it was the plan: it matches the scheme with an unanchored
`re.match` (so `BearerX` passes), answers 403 for a bad header, passes neither `leeway` nor
required claims to PyJWT, and logs a traceback per refused token. Each of those is fixed here in
a few lines over PyJWT itself, which is what aiohttp-jwt wraps.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any

import jwt
import structlog
from aiohttp import web

from commpro.appkeys import claims_key, config_key, own_auth_key
from commpro.errors import Unauthorized
from commpro.settings import Config

log = structlog.get_logger("commpro.auth")

# Anchored at both ends: a path is public only when it matches one of these in full, so no
# prefix or suffix trick ("/webhook/../api/x", "/healthzX") opens a protected route.
PUBLIC_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The console page: what it shows to anyone is /status without user data; its data panels
    # call the API with a token.
    (re.compile(r"^/$"), "none"),
    (re.compile(r"^/healthz$"), "none"),
    (re.compile(r"^/readyz$"), "none"),
    # The API's description: nothing in it is secret.
    (re.compile(r"^/openapi\.json$"), "none"),
    # Its rendered view (Swagger UI's own files); no segment may start with a dot.
    (re.compile(r"^/docs(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*/?$"), "none"),
    (re.compile(r"^/webhook(/[a-z]+)+$"), "twilio-signature"),
    # Outbound MMS media for Twilio to fetch: its own HMAC signature in the query.
    (re.compile(r"^/media/[0-9a-f-]{36}$"), "signed-url"),
    # Recorded greetings for Twilio's <Play>: signed the same way.
    (re.compile(r"^/greetings/[0-9a-f-]{36}$"), "signed-url"),
    # Its own optional token (metrics.token), checked by the handler.
    (re.compile(r"^/metrics$"), "metrics-token"),
)
# A route of a sub-application that checks its own credentials (own_auth_key: the sandbox that
# development mounts beside the service). Decided by the route a request resolved to, not by
# its path, so no path trick reaches a route of the service this way.
OWN_AUTH = "own"

EVENTS_PATH = "/api/events"
MAX_SUB_LENGTH = 255
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$")


def auth_for_path(path: str) -> str:
    """What a request to `path` of the service must carry: 'jwt', 'twilio-signature', 'none'..."""
    # Asked twice per request (here and by the webhook guard), of a few paths that repeat: the
    # patterns run once per path. Long paths are not kept, so no client fills the cache with
    # kilobytes each.
    return _auth_for_short_path(path) if len(path) <= _CACHED_PATH_LENGTH else _auth_for(path)


_CACHED_PATH_LENGTH = 200


def _auth_for(path: str) -> str:
    for pattern, kind in PUBLIC_PATTERNS:
        if pattern.match(path):
            return kind
    return "jwt"


_auth_for_short_path = functools.lru_cache(maxsize=1024)(_auth_for)


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
    if auth_for_path(request.path) != "jwt" or _own_auth_route(request):
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
    sub = claims.get("sub")
    # The user id is stored as text and logged: no NUL, no control characters or lone
    # surrogates (JSON can carry both), and a bounded length.
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH or not sub.isprintable():
        _refused(request, "sub")
        raise Unauthorized(f"Token 'sub' must be 1 to {MAX_SUB_LENGTH} printable characters")
    request[claims_key] = claims
    return await handler(request)


def _own_auth_route(request: web.Request) -> bool:
    """A route of a sub-application that checks its own credentials; a path under its prefix
    that matches none of its routes ("/_sandbox/../status") stays the service's to refuse."""
    match = request.match_info
    return match.http_exception is None and match.apps[-1].get(own_auth_key, False)


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
