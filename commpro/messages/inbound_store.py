"""SQL for an inbound SMS/MMS: everything the webhook changes, in one statement.

One round trip and no BEGIN/COMMIT: the statement is its own transaction, committed before the
webhook answers. It is idempotent on the MessageSid: a retry, or a duplicate arriving at the
same moment (it waits on the first one's row, then finds it), stores nothing and publishes
nothing. The owner's event counter is locked last (events/store.py), after every other change.

The webhook's batches (commpro.batcher) run the same changes for many messages in one statement
too: the SQL function inbound_sms_batch (sql/0013_inbound_sms_batches.sql); this statement is
for a message that failed in a batch and runs alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from commpro.events.store import CHANNEL, NOTIFY_EVENT, PUBLISH_CTES
from commpro.messages.erasure_store import QUEUED_JOBS
from commpro.messages.store import CONVERSATION_CHANGE

# $1 message id, $2 owner, $3 number id, $4 MessageSid, $5 From, $6 To, $7/$8 sealed body,
# $9 Twilio's NumSegments, $10 encoding, $11 NumMedia, $12 opted out (NULL: no STOP/START),
# $13/$14 the price job's kind and delay, $15-$19 pending media, $20 the media jobs' kind,
# $21 erase at Twilio once stored.
# - `num`: the number is still the owner's (it was looked up in an earlier statement);
# - the contact is upserted with its opt-out in one go (a row cannot change twice in one statement);
# - a blocked contact's message is stored already read, and raises no event;
# - with no media to fetch first, the message's erasure at Twilio is queued at once.
_STORE_CHANGES = f"""
WITH num AS (
    SELECT id, user_id FROM phone_numbers WHERE id = $3 AND user_id = $2
), contact AS (
    INSERT INTO contacts AS ct (user_id, phone_number, opted_out, opted_out_at)
    SELECT user_id, $5, coalesce($12::boolean, false), CASE WHEN $12 THEN now() END FROM num
    ON CONFLICT (user_id, phone_number) DO UPDATE SET phone_number = excluded.phone_number,
        opted_out = coalesce($12, ct.opted_out),
        opted_out_at = CASE WHEN $12 IS NULL THEN ct.opted_out_at WHEN $12 THEN now() END
    RETURNING id, blocked
), msg AS (
    INSERT INTO messages (id, user_id, contact_id, phone_number_id, sid, direction, from_number, to_number,
                          body_ciphertext, body_nonce, status, status_rank, num_segments, encoding, num_media,
                          read_at)
    SELECT $1, $2, c.id, $3, $4, 'inbound', $5, $6, $7, $8, 'received', 6, $9, $10, $11,
           CASE WHEN c.blocked THEN now() END
    FROM contact c
    ON CONFLICT (sid) DO NOTHING
    RETURNING id, user_id, contact_id, sid, created_at
), conversation AS (
    INSERT INTO conversations AS c (contact_id, user_id, last_message_id, last_message_at, unread_count)
    SELECT m.contact_id, m.user_id, m.id, m.created_at, CASE WHEN ct.blocked THEN 0 ELSE 1 END
    FROM msg m, contact ct
    {CONVERSATION_CHANGE}
    RETURNING 1
), price_job AS (
    INSERT INTO jobs (kind, key, run_at) SELECT $13, id::text, now() + make_interval(secs => $14) FROM msg
    ON CONFLICT (kind, key) DO NOTHING
    RETURNING 1
), media AS (
    INSERT INTO message_media (id, message_id, user_id, twilio_media_sid, content_type, source_url,
                               fetch_state, next_fetch_at, position)
    SELECT x.id, m.id, m.user_id, x.sid, x.content_type, x.url, 'pending', now(), x.position
    FROM msg m, unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::int[])
                AS x (id, sid, content_type, url, position)
    ON CONFLICT (twilio_media_sid) DO NOTHING
    RETURNING id
), media_jobs AS (
    INSERT INTO jobs (kind, key) SELECT $20, id::text FROM media
    ON CONFLICT (kind, key) DO NOTHING
    RETURNING 1
), queued AS (
    INSERT INTO twilio_erasures (message_sid, user_id, message_id, media_sids, reason)
    SELECT sid, user_id, id, '{{}}', 'stored' FROM msg WHERE $21 AND NOT EXISTS (SELECT FROM media)
    ON CONFLICT (message_sid) DO NOTHING
    RETURNING message_sid
), {QUEUED_JOBS}"""
INSERT_INBOUND_SMS = f"""{_STORE_CHANGES}, published AS (
    SELECT m.user_id, 'message.received' AS type,
           jsonb_build_object('messageId', m.id, 'contactId', m.contact_id, 'numMedia', $11) AS payload
    FROM msg m JOIN contact c ON NOT c.blocked
    -- Needs every other change first, so the event counter is locked last.
    WHERE (SELECT count(*) FROM conversation) + (SELECT count(*) FROM price_job)
        + (SELECT count(*) FROM media_jobs) + (SELECT count(*) FROM queued_jobs) >= 0
), {PUBLISH_CTES}
SELECT c.id AS contact_id, c.blocked, m.id IS NOT NULL AS inserted, notified.seq
FROM contact c LEFT JOIN msg m ON true {NOTIFY_EVENT}
"""
@dataclass(frozen=True)
class PendingMedia:
    """An inbound media to fetch after the webhook is answered: stored first, so never lost."""
    id: uuid.UUID
    sid: str | None
    content_type: str | None
    url: str
    position: int


@dataclass(frozen=True)
class Jobs:
    """The job kinds an inbound message enqueues, and when its price is first fetched."""
    price: str
    price_after_s: float
    media_fetch: str


@dataclass(frozen=True)
class InboundSms:
    """One inbound message as the statement stores it. `opted_out`: True on STOP, False on
    START, None otherwise; `sealed`: the body under the owner's data key."""
    message_id: uuid.UUID
    user_id: str
    number_id: uuid.UUID
    sid: str
    from_number: str
    to_number: str
    sealed: tuple[bytes, bytes]
    segments: int | None
    encoding: str
    num_media: int
    opted_out: bool | None
    media: list[PendingMedia]
    jobs: Jobs
    erase: bool


def _arguments(sms: InboundSms) -> tuple:
    media = sms.media
    return (sms.message_id, sms.user_id, sms.number_id, sms.sid, sms.from_number, sms.to_number, sms.sealed[0],
            sms.sealed[1], sms.segments, sms.encoding, sms.num_media, sms.opted_out, sms.jobs.price,
            float(sms.jobs.price_after_s), [m.id for m in media], [m.sid for m in media],
            [m.content_type for m in media], [m.url for m in media], [m.position for m in media],
            sms.jobs.media_fetch, sms.erase)


async def insert_inbound_sms(conn: asyncpg.Connection, sms: InboundSms) -> asyncpg.Record | None:
    """Store an inbound message with its contact, conversation, media, jobs and event: its own
    transaction, or part of the caller's. A row (contact_id, blocked, inserted: False when a
    retry found the message stored, seq: the event's number or None); None when the number is no
    longer the owner's."""
    return await conn.fetchrow(INSERT_INBOUND_SMS, *_arguments(sms))


# Many inbound messages in one statement, its own transaction (sql/0013_inbound_sms_batches.sql):
# each as INSERT_INBOUND_SMS, the events of all at the end.
INBOUND_SMS_BATCH = """
SELECT o_n AS n, o_inserted AS inserted, o_blocked AS blocked, o_contact_id AS contact_id
FROM inbound_sms_batch($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[],
                       $8::bytea[], $9::int[], $10::text[], $11::int[], $12::boolean[], $13::text[], $14::float8[],
                       $15::text[], $16::boolean[], $17::int[], $18::uuid[], $19::text[], $20::text[], $21::text[],
                       $22::int[], $23)
"""


async def insert_inbound_batch(conn: asyncpg.Connection, batch: list[InboundSms]) -> list[asyncpg.Record | None]:
    """Many inbound messages in one statement (commpro.batcher: one round trip, one notifying
    commit, for all), each as insert_inbound_sms does; a row (inserted, blocked, contact_id) or
    None (the number is no longer that owner's) for each, in `batch`'s order.

    Rows are locked owner by owner, contact by contact and message by message, in one order, and
    the event counters last: concurrent batches, and a request that locks a contact then
    publishes, wait for each other rather than deadlock. Idempotent on each MessageSid, as the
    batcher needs (a failed batch's items run again, alone)."""
    media = [(n, m) for n, sms in enumerate(batch, start=1) for m in sms.media]
    rows = await conn.fetch(
        INBOUND_SMS_BATCH, [s.message_id for s in batch], [s.user_id for s in batch], [s.number_id for s in batch],
        [s.sid for s in batch], [s.from_number for s in batch], [s.to_number for s in batch],
        [s.sealed[0] for s in batch], [s.sealed[1] for s in batch], [s.segments for s in batch],
        [s.encoding for s in batch], [s.num_media for s in batch], [s.opted_out for s in batch],
        [s.jobs.price for s in batch], [float(s.jobs.price_after_s) for s in batch],
        [s.jobs.media_fetch for s in batch], [s.erase for s in batch],
        [n for n, _ in media], [m.id for _, m in media], [m.sid for _, m in media],
        [m.content_type for _, m in media], [m.url for _, m in media], [m.position for _, m in media], CHANNEL)
    outcomes = {row["n"]: row for row in rows}
    return [outcomes.get(n) for n in range(1, len(batch) + 1)]
