"""SQL for phone numbers. Store functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from commpro.errors import Conflict

NUMBER_COLUMNS = """
id, user_id, e164, identity, forward_to, routing, ring_timeout_s, greeting_text, greeting_voice,
greeting_language, blocked_numbers, voicemail_on_no_answer, screening, record_calls, recording_announcement,
business_hours, created_at,
(SELECT jsonb_object_agg(g.kind, g.id) FROM number_greetings g WHERE g.number_id = phone_numbers.id) AS greetings
"""

INSERT_NUMBER = f"""
INSERT INTO phone_numbers (user_id, e164, identity, forward_to)
VALUES ($1, $2, $3, $4)
ON CONFLICT (e164) DO NOTHING
RETURNING {NUMBER_COLUMNS}
"""
# An app identity rings one user only.
IDENTITY_OWNER = "SELECT user_id FROM phone_numbers WHERE identity = $1 AND user_id <> $2 LIMIT 1"
SELECT_NUMBER_BY_E164 = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE e164 = $1"


async def insert_number(conn: asyncpg.Connection, user_id: str, e164: str, *,
                        identity: str | None = None, forward_to: str | None = None) -> asyncpg.Record:
    """Give `e164` to `user_id`; Conflict when another user has it or the identity."""
    if identity and await conn.fetchval(IDENTITY_OWNER, identity, user_id):
        raise Conflict(f"identity {identity!r} belongs to another user")
    row = await conn.fetchrow(INSERT_NUMBER, user_id, e164, identity, forward_to)
    if row is None:
        existing = await conn.fetchrow(SELECT_NUMBER_BY_E164, e164)
        if existing is not None and existing["user_id"] == user_id:
            return existing
        raise Conflict(f"{e164} is already assigned")
    return row


async def get_number_by_e164(conn: asyncpg.Connection, e164: str) -> asyncpg.Record | None:
    """The number Twilio called (webhooks carry no user: the number tells whose it is)."""
    return await conn.fetchrow(SELECT_NUMBER_BY_E164, e164)


NUMBER_OWNER = "SELECT id, user_id FROM phone_numbers WHERE e164 = $1"


async def get_number_owner(conn: asyncpg.Connection, e164: str) -> asyncpg.Record | None:
    """The number's id and owner only: all an inbound message needs."""
    return await conn.fetchrow(NUMBER_OWNER, e164)


LIST_NUMBERS = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers ORDER BY user_id, e164"
LIST_USER_NUMBERS = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE user_id = $1 ORDER BY e164"


async def list_numbers(conn: asyncpg.Connection, user_id: str | None = None) -> list[asyncpg.Record]:
    if user_id is None:
        return await conn.fetch(LIST_NUMBERS)
    return await conn.fetch(LIST_USER_NUMBERS, user_id)


OWNED_NUMBER = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE user_id = $1 AND e164 = $2"


NUMBER_BY_ID = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE id = $1"


async def get_number_by_id(conn: asyncpg.Connection, number_id) -> asyncpg.Record | None:
    """The number a call belongs to (webhooks: the call's row names it)."""
    return await conn.fetchrow(NUMBER_BY_ID, number_id)


async def get_owned_number(conn: asyncpg.Connection, user_id: str, e164: str) -> asyncpg.Record | None:
    return await conn.fetchrow(OWNED_NUMBER, user_id, e164)


# A number's own identity, or the identity its owner's app registered with (GET /api/calls/token).
IDENTITY_NUMBERS = f"""
SELECT {NUMBER_COLUMNS} FROM phone_numbers
WHERE identity = $1 OR user_id = (SELECT user_id FROM app_registrations WHERE identity = $1)
ORDER BY created_at, e164
"""


async def numbers_of_identity(conn: asyncpg.Connection, identity: str) -> list[asyncpg.Record]:
    """The numbers an app identity may call from (all one user's, see IDENTITY_OWNER and the
    token route, which never registers an identity another user has)."""
    return await conn.fetch(IDENTITY_NUMBERS, identity)


# Each field comes with a flag saying whether the request set it, so that null can be a value.
UPDATE_NUMBER = f"""
UPDATE phone_numbers SET
    routing = CASE WHEN $3 THEN $4 ELSE routing END,
    ring_timeout_s = CASE WHEN $5 THEN $6 ELSE ring_timeout_s END,
    greeting_text = CASE WHEN $7 THEN $8 ELSE greeting_text END,
    greeting_voice = CASE WHEN $9 THEN $10 ELSE greeting_voice END,
    greeting_language = CASE WHEN $11 THEN $12 ELSE greeting_language END,
    blocked_numbers = CASE WHEN $13 THEN $14 ELSE blocked_numbers END,
    forward_to = CASE WHEN $15 THEN $16 ELSE forward_to END,
    voicemail_on_no_answer = CASE WHEN $17 THEN $18 ELSE voicemail_on_no_answer END,
    screening = CASE WHEN $19 THEN $20 ELSE screening END,
    record_calls = CASE WHEN $21 THEN $22 ELSE record_calls END,
    recording_announcement = CASE WHEN $23 THEN $24 ELSE recording_announcement END,
    business_hours = CASE WHEN $25 THEN $26::jsonb ELSE business_hours END,
    updated_at = now()
WHERE user_id = $1 AND id = $2
RETURNING {NUMBER_COLUMNS}
"""
UPDATABLE = ("routing", "ring_timeout_s", "greeting_text", "greeting_voice", "greeting_language",
             "blocked_numbers", "forward_to", "voicemail_on_no_answer", "screening",
             "record_calls", "recording_announcement", "business_hours")


async def update_number(conn: asyncpg.Connection, user_id: str, number_id: uuid.UUID,
                        changes: dict[str, Any]) -> asyncpg.Record | None:
    """Apply `changes` (column -> value, only the columns to change); None when not the user's."""
    args: list[Any] = []
    for column in UPDATABLE:
        args += [column in changes, changes.get(column)]
    return await conn.fetchrow(UPDATE_NUMBER, user_id, number_id, *args)
