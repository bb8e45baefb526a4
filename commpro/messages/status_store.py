"""SQL for message status callbacks applied in batches (commpro.batcher); the one-at-a-time
statements are in messages.store. The caller owns the transaction."""

from __future__ import annotations

import asyncpg

from commpro.messages.store import FINAL_RANK

# Many status callbacks in one statement (message_status_callbacks, sql/0012, set-based): for
# each item, in order, what webhooks.message_status does, or 'unknown' (no such message), or 'slow' (left to it).
STATUS_CALLBACKS = "SELECT n, outcome FROM message_status_callbacks($1::jsonb, $2, $3, $4, $5) ORDER BY n"


async def apply_status_callbacks(conn: asyncpg.Connection, items: list[dict], *, price_kind: str,
                                 price_after_s: float, channel: str) -> list[str]:
    """Each item's outcome, in order: 'done', 'unknown' or 'slow'."""
    rows = await conn.fetch(STATUS_CALLBACKS, [{**item, "n": n} for n, item in enumerate(items)], price_kind,
                            float(price_after_s), FINAL_RANK, channel)
    return [row["outcome"] for row in rows]
