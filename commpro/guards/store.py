"""SQL for the request guards: idempotency keys and token-bucket rate limits."""

from __future__ import annotations

import math

import asyncpg

CLAIM_KEY = """
INSERT INTO idempotency_keys (user_id, scope, key, request_hash)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
"""
SELECT_KEY = """
SELECT request_hash, status_code, response FROM idempotency_keys
WHERE user_id = $1 AND scope = $2 AND key = $3
"""


async def claim_idempotency_key(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                                request_hash: str) -> asyncpg.Record | None:
    """None when this request now owns the key; else the row of the request that owns it."""
    status = await conn.execute(CLAIM_KEY, user_id, scope, key, request_hash)
    if status == "INSERT 0 1":
        return None
    return await conn.fetchrow(SELECT_KEY, user_id, scope, key)


STORE_RESPONSE = """
UPDATE idempotency_keys SET status_code = $4, response = $5
WHERE user_id = $1 AND scope = $2 AND key = $3
"""


async def store_idempotent_response(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                                    status_code: int, response: dict) -> None:
    await conn.execute(STORE_RESPONSE, user_id, scope, key, status_code, response)


RELEASE_KEY = "DELETE FROM idempotency_keys WHERE user_id = $1 AND scope = $2 AND key = $3 AND response IS NULL"


async def release_idempotency_key(conn: asyncpg.Connection, user_id: str, scope: str, key: str) -> None:
    """Forget a claim whose request failed in a way worth retrying."""
    await conn.execute(RELEASE_KEY, user_id, scope, key)


# Refill since the last spend, capped at the capacity, then spend one token if one is there.
# One statement: concurrent requests on any replica serialise on the row.
SPEND_TOKEN = """
INSERT INTO rate_limits AS r (user_id, name, tokens, updated_at)
VALUES ($1, $2, $3 - 1, clock_timestamp())
ON CONFLICT (user_id, name) DO UPDATE
SET tokens = LEAST($3, r.tokens + EXTRACT(EPOCH FROM clock_timestamp() - r.updated_at) * $4) - 1,
    updated_at = clock_timestamp()
WHERE LEAST($3, r.tokens + EXTRACT(EPOCH FROM clock_timestamp() - r.updated_at) * $4) >= 1
RETURNING tokens
"""
TOKENS_NOW = """
SELECT LEAST($3, tokens + EXTRACT(EPOCH FROM clock_timestamp() - updated_at) * $4)
FROM rate_limits WHERE user_id = $1 AND name = $2
"""


async def spend_token(conn: asyncpg.Connection, user_id: str, name: str, per_minute: int) -> int:
    """0 when a token was spent, else the seconds until one will be there."""
    rate = per_minute / 60.0
    if await conn.fetchval(SPEND_TOKEN, user_id, name, float(per_minute), rate) is not None:
        return 0
    tokens = await conn.fetchval(TOKENS_NOW, user_id, name, float(per_minute), rate) or 0.0
    return max(1, math.ceil((1 - tokens) / rate))
