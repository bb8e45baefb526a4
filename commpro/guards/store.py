"""SQL for the request guards: idempotency keys and token-bucket rate limits."""

from __future__ import annotations

import math
import uuid
from datetime import datetime

import asyncpg

# One statement claims a key: a new key, or one whose request died (its lease lapsed before it
# bound a row or gave an answer; a claim from before leases has none), now belongs to this
# request (`owner`). Otherwise the row as it
# stands says what to answer. The second branch reads a row the first did not take; in the rare
# race where a concurrent claim committed after this statement's snapshot, it finds nothing and
# the caller claims again.
CLAIM_KEY = """
WITH claim AS (
    INSERT INTO idempotency_keys AS k (user_id, scope, key, request_hash, locked_until)
    VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))
    ON CONFLICT (user_id, scope, key) DO UPDATE SET locked_until = excluded.locked_until
    WHERE k.response IS NULL AND k.resource_id IS NULL
      AND coalesce(k.locked_until, '-infinity') < clock_timestamp()
      AND k.request_hash = excluded.request_hash
    RETURNING k.request_hash, k.status_code, k.response, k.resource_id, false AS in_flight, true AS owner
)
SELECT * FROM claim
UNION ALL
SELECT request_hash, status_code, response, resource_id,
       coalesce(locked_until > clock_timestamp(), false) AS in_flight, false AS owner
FROM idempotency_keys
WHERE user_id = $1 AND scope = $2 AND key = $3 AND NOT EXISTS (SELECT 1 FROM claim)
"""


async def claim_idempotency_key(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                                request_hash: str, lease_s: float) -> asyncpg.Record:
    """The key's row: `owner` when this request now runs it, else what it holds."""
    while True:
        row = await conn.fetchrow(CLAIM_KEY, user_id, scope, key, request_hash, lease_s)
        if row is not None:
            return row


BIND_KEY = "UPDATE idempotency_keys SET resource_id = $4 WHERE user_id = $1 AND scope = $2 AND key = $3"


async def bind_idempotency_key(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                               resource_id: uuid.UUID) -> None:
    """In the transaction that inserts the row: from its commit on, retries answer that row."""
    await conn.execute(BIND_KEY, user_id, scope, key, resource_id)


STORE_RESPONSE = """
UPDATE idempotency_keys SET status_code = $4, response = $5, locked_until = NULL
WHERE user_id = $1 AND scope = $2 AND key = $3
"""


async def store_idempotent_response(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                                    status_code: int, response: dict | None) -> None:
    """The request is over. With no `response`, retries answer the bound row as it stands."""
    await conn.execute(STORE_RESPONSE, user_id, scope, key, status_code, response)


RELEASE_KEY = """
DELETE FROM idempotency_keys
WHERE user_id = $1 AND scope = $2 AND key = $3 AND response IS NULL AND (resource_id IS NULL OR $4)
"""


async def release_idempotency_key(conn: asyncpg.Connection, user_id: str, scope: str, key: str,
                                  bound_too: bool = False) -> None:
    """Forget a claim whose request failed in a way worth retrying afresh. A key bound to a row
    is kept unless `bound_too` (the row is known to have gone nowhere)."""
    await conn.execute(RELEASE_KEY, user_id, scope, key, bound_too)


# Purged in batches, never a key whose request is still in flight.
PURGE_KEYS = """
DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys
    WHERE created_at < $1 AND (locked_until IS NULL OR locked_until < clock_timestamp())
    LIMIT $2))
"""


async def purge_idempotency_keys(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    result = await conn.execute(PURGE_KEYS, before, limit)
    return int(result.split()[-1])


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


DELETE_IDLE_BUCKETS = "DELETE FROM rate_limits WHERE updated_at < $1"


async def delete_idle_buckets(conn: asyncpg.Connection, before: datetime) -> int:
    return int((await conn.execute(DELETE_IDLE_BUCKETS, before)).split()[-1])
