"""The user's app: the identity its Access Token carries, and whether the user has registered it.

SQL for app registrations lives here (a store module: functions take a connection).
"""

from __future__ import annotations

import hashlib
import re

import asyncpg

from commpro.errors import Conflict

# Twilio Client identities: letters, digits and underscores keep every SDK and URL happy; Twilio
# allows up to 121 characters.
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
MAX_READABLE = 64


def derived_identity(user_id: str) -> str:
    """A stable identity for a user with none configured: readable, and unique thanks to a
    digest of the exact user id (two ids that differ only by punctuation stay apart)."""
    readable = _UNSAFE.sub("_", user_id)[:MAX_READABLE]
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:12]
    return f"u_{readable}_{digest}"


REGISTER_APP = """
INSERT INTO app_registrations (user_id, identity) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET identity = EXCLUDED.identity, last_token_at = now()
"""


async def register_app(conn: asyncpg.Connection, user_id: str, identity: str) -> None:
    """Record that `user_id` holds a token for `identity`: inbound calls ring it from now on.
    Conflict when another user's app already uses that identity."""
    try:
        await conn.execute(REGISTER_APP, user_id, identity)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"identity {identity!r} belongs to another user") from None


UNREGISTER_APP = "DELETE FROM app_registrations WHERE user_id = $1"


async def unregister_app(conn: asyncpg.Connection, user_id: str) -> None:
    """The user signed out of the app: inbound calls stop ringing its identity."""
    await conn.execute(UNREGISTER_APP, user_id)


REGISTERED_IDENTITY = "SELECT identity FROM app_registrations WHERE user_id = $1"


async def registered_identity(conn: asyncpg.Connection, user_id: str) -> str | None:
    return await conn.fetchval(REGISTERED_IDENTITY, user_id)


IDENTITY_USED_ELSEWHERE = """
SELECT EXISTS (SELECT 1 FROM phone_numbers WHERE identity = $1 AND user_id <> $2)
    OR EXISTS (SELECT 1 FROM app_registrations WHERE identity = $1 AND user_id <> $2)
"""


async def identity_used_elsewhere(conn: asyncpg.Connection, identity: str, user_id: str) -> bool:
    return await conn.fetchval(IDENTITY_USED_ELSEWHERE, identity, user_id)


def ring_identity(number: asyncpg.Record, registered: str | None) -> str | None:
    """The app identity an inbound call to `number` rings: the number's own, else the one its
    owner registered by fetching a token, else none (the app is not installed)."""
    return number["identity"] or registered
