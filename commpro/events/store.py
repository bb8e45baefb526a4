"""SQL for the event log. publish() runs in the caller's transaction: the event exists, and is
announced, exactly when the change it describes is committed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson

CHANNEL = "commpro_events"

INSERT_EVENT = """
INSERT INTO events (user_id, type, payload) VALUES ($1, $2, $3)
RETURNING id, created_at
"""
# NOTIFY is delivered at commit, and not at all on rollback.
NOTIFY = "SELECT pg_notify($1, $2)"


async def publish(conn: asyncpg.Connection, user_id: str, type_: str, payload: dict[str, Any]) -> int:
    row = await conn.fetchrow(INSERT_EVENT, user_id, type_, payload)
    event = {"id": row["id"], "user": user_id, "type": type_, "data": payload,
             "at": row["created_at"].isoformat()}
    await conn.execute(NOTIFY, CHANNEL, orjson.dumps(event).decode())
    return row["id"]


EVENTS_SINCE = """
SELECT id, user_id, type, payload, created_at FROM events
WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3
"""


async def events_since(conn: asyncpg.Connection, user_id: str, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(EVENTS_SINCE, user_id, after_id, limit)


DELETE_OLD = "DELETE FROM events WHERE created_at < $1"


async def delete_old_events(conn: asyncpg.Connection, before: datetime) -> int:
    result = await conn.execute(DELETE_OLD, before)
    return int(result.split()[-1])
