"""SQL for recorded greetings. Store functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid

import asyncpg

# Ownership in the statement: the number must be the user's, or nothing is written.
PUT_GREETING = """
INSERT INTO number_greetings (id, number_id, user_id, kind, content_type, size_bytes, ciphertext, nonce)
SELECT $1, n.id, n.user_id, $4, $5, $6, $7, $8 FROM phone_numbers n WHERE n.id = $2 AND n.user_id = $3
ON CONFLICT (number_id, kind) DO UPDATE SET
    id = EXCLUDED.id, content_type = EXCLUDED.content_type, size_bytes = EXCLUDED.size_bytes,
    ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce, created_at = now()
RETURNING id, kind, content_type, size_bytes, created_at
"""


async def put_greeting(conn: asyncpg.Connection, greeting_id: uuid.UUID, number_id: uuid.UUID, user_id: str,
                       kind: str, content_type: str, size: int, sealed: tuple[bytes, bytes]) -> asyncpg.Record | None:
    """Store (or replace) the greeting; None when the number is not the user's."""
    return await conn.fetchrow(PUT_GREETING, greeting_id, number_id, user_id, kind, content_type, size, *sealed)


DELETE_GREETING = "DELETE FROM number_greetings WHERE number_id = $1 AND user_id = $2 AND kind = $3"


async def delete_greeting(conn: asyncpg.Connection, number_id: uuid.UUID, user_id: str, kind: str) -> bool:
    return await conn.execute(DELETE_GREETING, number_id, user_id, kind) == "DELETE 1"


GREETING_BY_ID = "SELECT id, user_id, content_type, ciphertext, nonce, created_at FROM number_greetings WHERE id = $1"


async def get_greeting(conn: asyncpg.Connection, greeting_id: uuid.UUID) -> asyncpg.Record | None:
    """For the signed URL Twilio fetches: the signature, not a user, authorises it."""
    return await conn.fetchrow(GREETING_BY_ID, greeting_id)
