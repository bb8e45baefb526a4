"""SQL for the erasure outbox: what Twilio still holds of a message, until it is deleted there."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

LOCK_MESSAGE = "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE"
# Once no media of the message is waiting to be fetched: the media we stored, and the body.
# Media we gave up fetching stays at Twilio (the only copy left) until a shred.
ENQUEUE_STORED = """
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT m.sid, m.user_id, m.id,
       coalesce(array_agg(mm.twilio_media_sid) FILTER (WHERE mm.fetch_state = 'done'
                                                       AND mm.twilio_media_sid IS NOT NULL), '{}'),
       'stored'
FROM messages m LEFT JOIN message_media mm ON mm.message_id = m.id
WHERE m.id = $1 AND m.sid IS NOT NULL AND m.direction = 'inbound'
GROUP BY m.id
HAVING count(mm.id) FILTER (WHERE mm.fetch_state = 'pending') = 0
ON CONFLICT (message_sid) DO NOTHING
"""


async def enqueue_if_stored(conn: asyncpg.Connection, message_id: uuid.UUID) -> bool:
    """Queue an inbound message's erasure at Twilio once all its media is stored (or given up).
    The message row is locked first, so that two media stored at once cannot both miss it."""
    await conn.execute(LOCK_MESSAGE, message_id)
    return await conn.execute(ENQUEUE_STORED, message_id) == "INSERT 0 1"


ENQUEUE_FINAL = """
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT sid, user_id, id, NULL, 'final' FROM messages WHERE id = $1 AND sid IS NOT NULL AND direction = 'outbound'
ON CONFLICT (message_sid) DO NOTHING
"""


async def enqueue_final(conn: asyncpg.Connection, message_id: uuid.UUID) -> None:
    """Queue an outbound message's erasure at Twilio: every media Twilio lists, and the body."""
    await conn.execute(ENQUEUE_FINAL, message_id)


# Everything of the user's; what was fully erased (every media listed) is not done again.
ENQUEUE_USER = """
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT sid, user_id, id, NULL, 'shred' FROM messages WHERE user_id = $1 AND sid IS NOT NULL
ON CONFLICT (message_sid) DO UPDATE
SET media_sids = NULL, reason = 'shred', state = 'pending', attempts = 0, next_at = now(), last_error = NULL
WHERE NOT (twilio_erasures.state = 'done' AND twilio_erasures.media_sids IS NULL)
"""


async def enqueue_user(conn: asyncpg.Connection, user_id: str) -> int:
    """Queue the erasure at Twilio of every message of the user; how many were queued."""
    result = await conn.execute(ENQUEUE_USER, user_id)
    return int(result.rsplit(" ", 1)[-1])


CLAIM_DUE = """
UPDATE twilio_erasures SET next_at = $1 + make_interval(secs => $3)
WHERE message_sid IN (
    SELECT message_sid FROM twilio_erasures WHERE state = 'pending' AND next_at <= $1
    ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING message_sid, user_id, message_id, media_sids, reason, attempts
"""


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Rows due, leased for `lease_s`: another replica skips them meanwhile, and a row whose
    worker died is taken up again when the lease runs out."""
    return await conn.fetch(CLAIM_DUE, now, limit, lease_s)


MARK_DONE = """
UPDATE twilio_erasures SET state = 'done', done_at = now(), last_error = NULL, attempts = attempts + 1
WHERE message_sid = $1
"""


async def mark_done(conn: asyncpg.Connection, message_sid: str) -> None:
    await conn.execute(MARK_DONE, message_sid)


RESCHEDULE = """
UPDATE twilio_erasures SET attempts = attempts + 1, next_at = $2, last_error = $3,
       state = CASE WHEN $4 THEN 'gave_up' ELSE 'pending' END
WHERE message_sid = $1
"""


async def reschedule(conn: asyncpg.Connection, message_sid: str, next_at: datetime, error: str,
                     give_up: bool) -> None:
    await conn.execute(RESCHEDULE, message_sid, next_at, error, give_up)


PROGRESS = """
SELECT count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'done') AS done,
       count(*) FILTER (WHERE state = 'gave_up') AS gave_up
FROM twilio_erasures WHERE user_id = $1
"""


async def progress(conn: asyncpg.Connection, user_id: str) -> asyncpg.Record:
    """How far the user's erasure at Twilio has come: pending, done, gave_up."""
    return await conn.fetchrow(PROGRESS, user_id)
