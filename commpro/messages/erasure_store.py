"""SQL for the erasure outbox: what Twilio still holds of a message, until it is deleted there."""

from __future__ import annotations

import uuid

import asyncpg

# The tail of each enqueue below (`queued`: the erasures it wrote): each one's job goes on the
# queue (commpro.jobs) in the same statement, queued again when a shred asks for more than an
# earlier erasure did; the count of erasures queued is the answer.
QUEUED_JOBS = """
queued_jobs AS (
    INSERT INTO jobs (kind, key) SELECT 'twilio-erasure', message_sid FROM queued
    ON CONFLICT (kind, key) DO UPDATE
    SET state = 'pending', run_at = now(), attempts = 0, claim = NULL, lease_until = NULL, last_error = NULL
    WHERE jobs.state <> 'pending'
    RETURNING 1
)"""
QUEUE_JOBS = f"""{QUEUED_JOBS}
SELECT count(*) FROM queued
"""
ERASURE_KIND = "twilio-erasure"
LOCK_MESSAGE = "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE"
# Once no media of the message is waiting to be fetched: the media we stored, and the body.
# Media we gave up fetching stays at Twilio (the only copy left) until a shred.
ENQUEUE_STORED = f"""
WITH queued AS (
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT m.sid, m.user_id, m.id,
       coalesce(array_agg(mm.twilio_media_sid) FILTER (WHERE mm.fetch_state = 'done'
                                                       AND mm.twilio_media_sid IS NOT NULL), '{{}}'),
       'stored'
FROM messages m LEFT JOIN message_media mm ON mm.message_id = m.id
WHERE m.id = $1 AND m.sid IS NOT NULL AND m.direction = 'inbound'
GROUP BY m.id
HAVING count(mm.id) FILTER (WHERE mm.fetch_state = 'pending') = 0
ON CONFLICT (message_sid) DO NOTHING
RETURNING message_sid
), {QUEUE_JOBS}"""


async def enqueue_if_stored(conn: asyncpg.Connection, message_id: uuid.UUID) -> bool:
    """Queue an inbound message's erasure at Twilio once all its media is stored (or given up).
    The message row is locked first, so that two media stored at once cannot both miss it."""
    await conn.execute(LOCK_MESSAGE, message_id)
    return await conn.fetchval(ENQUEUE_STORED, message_id) == 1


ENQUEUE_FINAL = f"""
WITH queued AS (
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT sid, user_id, id, NULL, 'final' FROM messages WHERE id = $1 AND sid IS NOT NULL AND direction = 'outbound'
ON CONFLICT (message_sid) DO NOTHING
RETURNING message_sid
), {QUEUE_JOBS}"""


async def enqueue_final(conn: asyncpg.Connection, message_id: uuid.UUID) -> None:
    """Queue an outbound message's erasure at Twilio: every media Twilio lists, and the body."""
    await conn.fetchval(ENQUEUE_FINAL, message_id)


# Everything of the user's; what was fully erased (every media listed) is not done again.
ENQUEUE_USER = f"""
WITH queued AS (
INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
SELECT sid, user_id, id, NULL, 'shred' FROM messages WHERE user_id = $1 AND sid IS NOT NULL
ON CONFLICT (message_sid) DO UPDATE
SET media_sids = NULL, reason = 'shred', state = 'pending', attempts = 0, next_at = now(), last_error = NULL
WHERE NOT (twilio_erasures.state = 'done' AND twilio_erasures.media_sids IS NULL)
RETURNING message_sid
), {QUEUE_JOBS}"""


async def enqueue_user(conn: asyncpg.Connection, user_id: str) -> int:
    """Queue the erasure at Twilio of every message of the user; how many were queued."""
    return await conn.fetchval(ENQUEUE_USER, user_id)


PENDING = """
SELECT message_sid, user_id, message_id, media_sids, reason, attempts FROM twilio_erasures
WHERE message_sid = $1 AND state = 'pending'
"""


async def get_pending(conn: asyncpg.Connection, message_sid: str) -> asyncpg.Record | None:
    return await conn.fetchrow(PENDING, message_sid)


# Only what was read is done: a shred that widened the row meanwhile (every media, not only
# those stored) leaves it pending, and the job runs again for the rest.
MARK_DONE = """
UPDATE twilio_erasures SET state = 'done', done_at = now(), last_error = NULL, attempts = attempts + 1
WHERE message_sid = $1 AND reason = $2 AND media_sids IS NOT DISTINCT FROM $3::text[]
"""


async def mark_done(conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
    """False when the row asks for more than `row` did (the erasure must run again)."""
    return await conn.execute(MARK_DONE, row["message_sid"], row["reason"], row["media_sids"]) == "UPDATE 1"


FAILED = """
UPDATE twilio_erasures SET attempts = attempts + 1, last_error = $2,
       state = CASE WHEN $3 THEN 'gave_up' ELSE state END
WHERE message_sid = $1 AND state = 'pending'
"""


async def record_failure(conn: asyncpg.Connection, message_sid: str, error: str, gave_up: bool = False) -> None:
    """What went wrong, for `commpro keys erasure`; the job queue decides when to try again."""
    await conn.execute(FAILED, message_sid, error, gave_up)


PROGRESS = """
SELECT count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'done') AS done,
       count(*) FILTER (WHERE state = 'gave_up') AS gave_up
FROM twilio_erasures WHERE user_id = $1
"""


async def progress(conn: asyncpg.Connection, user_id: str) -> asyncpg.Record:
    """How far the user's erasure at Twilio has come: pending, done, gave_up."""
    return await conn.fetchrow(PROGRESS, user_id)
