"""SQL for phone numbers. Store functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import asyncpg

from commpro.errors import Conflict

NUMBER_COLUMNS = "id, user_id, e164, identity, forward_to, routing, ring_timeout_s, created_at"

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


LIST_NUMBERS = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers ORDER BY user_id, e164"
LIST_USER_NUMBERS = f"SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE user_id = $1 ORDER BY e164"


async def list_numbers(conn: asyncpg.Connection, user_id: str | None = None) -> list[asyncpg.Record]:
    if user_id is None:
        return await conn.fetch(LIST_NUMBERS)
    return await conn.fetch(LIST_USER_NUMBERS, user_id)
