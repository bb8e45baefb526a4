"""SQL for the per-user data keys (wrapped by the master key, never stored in the clear)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# `uncommitted`: the row was written by the caller's own transaction, which may still roll back.
# (xmin is the 32-bit id of the writing transaction; the current one's, when it has one, is the
# low 32 bits of txid_current_if_assigned().)
SELECT_KEY = """
SELECT wrapped_key, master_key_id, created_at, shredded_at,
       coalesce(xmin::text::bigint = txid_current_if_assigned() % 4294967296, false) AS uncommitted
FROM user_keys WHERE user_id = $1
"""


async def get_user_key(conn: asyncpg.Connection, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_KEY, user_id)


# A first key, or a new one after a shred; a concurrent creator wins and this one reads its key.
INSERT_KEY = """
INSERT INTO user_keys (user_id, wrapped_key, master_key_id) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO UPDATE
SET wrapped_key = excluded.wrapped_key, master_key_id = excluded.master_key_id,
    created_at = now(), shredded_at = NULL, rotated_at = NULL
WHERE user_keys.wrapped_key IS NULL
"""


async def insert_user_key(conn: asyncpg.Connection, user_id: str, wrapped: bytes, master_key_id: str) -> None:
    await conn.execute(INSERT_KEY, user_id, wrapped, master_key_id)


SHRED_KEY = """
UPDATE user_keys SET wrapped_key = NULL, shredded_at = now()
WHERE user_id = $1 AND wrapped_key IS NOT NULL
RETURNING shredded_at
"""


async def shred_user_key(conn: asyncpg.Connection, user_id: str) -> datetime | None:
    return await conn.fetchval(SHRED_KEY, user_id)


COUNT_TO_REWRAP = "SELECT count(*) FROM user_keys WHERE wrapped_key IS NOT NULL AND master_key_id <> $1"
CLAIM_TO_REWRAP = """
SELECT user_id, wrapped_key, master_key_id FROM user_keys
WHERE wrapped_key IS NOT NULL AND master_key_id <> $1
ORDER BY user_id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
REWRAP = "UPDATE user_keys SET wrapped_key = $2, master_key_id = $3, rotated_at = now() WHERE user_id = $1"


async def count_to_rewrap(conn: asyncpg.Connection, master_key_id: str) -> int:
    return await conn.fetchval(COUNT_TO_REWRAP, master_key_id)


async def claim_to_rewrap(conn: asyncpg.Connection, master_key_id: str, limit: int) -> list[asyncpg.Record]:
    """Rows still wrapped by an older master key; locked until the caller's transaction ends."""
    return await conn.fetch(CLAIM_TO_REWRAP, master_key_id, limit)


async def rewrap(conn: asyncpg.Connection, user_id: str, wrapped: bytes, master_key_id: str) -> None:
    await conn.execute(REWRAP, user_id, wrapped, master_key_id)
