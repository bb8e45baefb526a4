"""Signed, expiring URLs for what Twilio fetches without our credentials (outbound MMS media,
recorded greetings): PUBLIC_BASE_URL/<path>/{id}?exp=...&sig=..., an HMAC-SHA256 over the id and
the expiry with a key derived from the master key, one derivation per purpose, so a link of one
kind never opens another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid

from aiohttp import web

from commpro.errors import Forbidden, NotFound
from commpro.settings import Config

_EXPIRY = re.compile(r"^[0-9]{1,12}$", re.ASCII)


def signature(config: Config, purpose: bytes, item_id: str, expires: int) -> str:
    key = hmac.new(base64.b64decode(config.crypto.master_key), purpose, hashlib.sha256).digest()
    mac = hmac.new(key, f"{item_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def signed_url(config: Config, path: str, purpose: bytes, item_id: object, ttl_s: float,
               now: float | None = None) -> str:
    expires = int((now or time.time()) + ttl_s)
    return f"{config.server.public_base_url}{path}/{item_id}?exp={expires}&sig={signature(config, purpose, str(item_id), expires)}"


def checked_id(request: web.Request, config: Config, purpose: bytes, what: str) -> uuid.UUID:
    """The id of a signed request ({id} in its path), or 403 (bad signature, expired), 404."""
    item_id, exp, sig = request.match_info["id"], request.query.get("exp", ""), request.query.get("sig", "")
    # ASCII digits only, and few of them: str.isdigit() also passes "²", and int() refuses a few
    # thousand digits. Bytes for compare_digest, which refuses non-ASCII str.
    expires = int(exp) if _EXPIRY.match(exp) else None
    given = sig.encode("utf-8", "surrogatepass")
    if expires is None or not hmac.compare_digest(given, signature(config, purpose, item_id, expires).encode()):
        raise Forbidden(f"Invalid {what} signature")
    if expires < time.time():
        raise Forbidden(f"This {what} link has expired")
    try:
        return uuid.UUID(item_id)
    except ValueError:
        raise NotFound() from None
