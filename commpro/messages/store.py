"""SQL for contacts, messages, conversation summaries and media.

Each conversation's summary (last message, unread count) changes in the same transaction as the
message that changes it, so the conversation list reads one row per conversation and never
scans messages. A message status only moves forward (queued 0 < sending 1 < sent 2 < delivered,
undelivered, failed, received 3).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg

STATUS_RANK = {
    "accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 2,
    "delivered": 3, "undelivered": 3, "failed": 3, "received": 3, "read": 3, "canceled": 3,
}
TERMINAL_RANK = 3

# -- contacts ----------------------------------------------------------------------------------

# DO UPDATE (a no-op) rather than DO NOTHING, so that the existing row is returned.
UPSERT_CONTACT = """
INSERT INTO contacts (user_id, phone_number) VALUES ($1, $2)
ON CONFLICT (user_id, phone_number) DO UPDATE SET phone_number = excluded.phone_number
RETURNING id, phone_number, name, opted_out
"""


async def upsert_contact(conn: asyncpg.Connection, user_id: str, phone_number: str) -> asyncpg.Record:
    return await conn.fetchrow(UPSERT_CONTACT, user_id, phone_number)


SET_OPT_OUT = """
UPDATE contacts SET opted_out = $3, opted_out_at = CASE WHEN $3 THEN now() END
WHERE user_id = $1 AND phone_number = $2
"""


async def set_opt_out(conn: asyncpg.Connection, user_id: str, phone_number: str, opted_out: bool) -> None:
    await conn.execute(SET_OPT_OUT, user_id, phone_number, opted_out)


GET_CONTACT = "SELECT id, phone_number, name, opted_out FROM contacts WHERE user_id = $1 AND id = $2"


async def get_contact(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_CONTACT, user_id, contact_id)


# -- messages ----------------------------------------------------------------------------------

INSERT_OUTBOUND = """
INSERT INTO messages (id, user_id, contact_id, phone_number_id, direction, from_number, to_number,
                      body_ciphertext, body_nonce, status, status_rank, num_segments, encoding, num_media)
VALUES ($1, $2, $3, $4, 'outbound', $5, $6, $7, $8, 'queued', 0, $9, $10, $11)
RETURNING created_at
"""


async def insert_outbound(conn: asyncpg.Connection, message_id: uuid.UUID, user_id: str, contact_id: uuid.UUID,
                          number_id: uuid.UUID, from_number: str, to_number: str, sealed: tuple[bytes, bytes] | None,
                          segments: int, encoding: str, num_media: int) -> datetime:
    ciphertext, nonce = sealed or (None, None)
    created_at = await conn.fetchval(INSERT_OUTBOUND, message_id, user_id, contact_id, number_id, from_number,
                                     to_number, ciphertext, nonce, segments, encoding, num_media)
    await touch_conversation(conn, user_id, contact_id, message_id, created_at, unread=0)
    return created_at


INSERT_INBOUND = """
INSERT INTO messages (id, user_id, contact_id, phone_number_id, sid, direction, from_number, to_number,
                      body_ciphertext, body_nonce, status, status_rank, num_segments, encoding, num_media,
                      price_next_at)
VALUES ($1, $2, $3, $4, $5, 'inbound', $6, $7, $8, $9, 'received', 3, $10, $11, $12,
        now() + make_interval(secs => $13))
ON CONFLICT (sid) DO NOTHING
RETURNING created_at
"""


async def insert_inbound(conn: asyncpg.Connection, message_id: uuid.UUID, user_id: str, contact_id: uuid.UUID,
                         number_id: uuid.UUID, sid: str, from_number: str, to_number: str,
                         sealed: tuple[bytes, bytes], segments: int, encoding: str, num_media: int,
                         price_after_s: float) -> bool:
    """Idempotent on the MessageSid: False when a retry finds the message already stored."""
    created_at = await conn.fetchval(INSERT_INBOUND, message_id, user_id, contact_id, number_id, sid,
                                     from_number, to_number, sealed[0], sealed[1], segments, encoding,
                                     num_media, price_after_s)
    if created_at is None:
        return False
    await touch_conversation(conn, user_id, contact_id, message_id, created_at, unread=1)
    return True


TOUCH_CONVERSATION = """
INSERT INTO conversations AS c (contact_id, user_id, last_message_id, last_message_at, unread_count)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (contact_id) DO UPDATE SET
    last_message_id = CASE WHEN excluded.last_message_at >= c.last_message_at
                           THEN excluded.last_message_id ELSE c.last_message_id END,
    last_message_at = greatest(c.last_message_at, excluded.last_message_at),
    unread_count = c.unread_count + excluded.unread_count
"""


async def touch_conversation(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID,
                             message_id: uuid.UUID, at: datetime, unread: int) -> None:
    await conn.execute(TOUCH_CONVERSATION, contact_id, user_id, message_id, at, unread)


SET_MESSAGE_SID = "UPDATE messages SET sid = $2, updated_at = now() WHERE id = $1 AND sid IS NULL"


async def set_message_sid(conn: asyncpg.Connection, message_id: uuid.UUID, sid: str) -> None:
    await conn.execute(SET_MESSAGE_SID, message_id, sid)


APPLY_STATUS = """
UPDATE messages SET status = $2, status_rank = $3, error_code = coalesce($4, error_code),
       price_next_at = CASE WHEN $3 = 3 THEN now() + make_interval(secs => $5) ELSE price_next_at END,
       updated_at = now()
WHERE id = $1 AND status_rank < $3
"""


async def apply_status(conn: asyncpg.Connection, message_id: uuid.UUID, status: str, error_code: int | None,
                       price_after_s: float) -> bool:
    result = await conn.execute(APPLY_STATUS, message_id, status, STATUS_RANK[status], error_code, price_after_s)
    return result == "UPDATE 1"


FAIL_MESSAGE = """
UPDATE messages SET status = 'failed', status_rank = 3, error_code = $2, price_state = 'done', updated_at = now()
WHERE id = $1 AND status_rank < 3
"""


async def fail_message(conn: asyncpg.Connection, message_id: uuid.UUID, error_code: int | None) -> None:
    """A message Twilio never accepted: failed, and nothing to price."""
    await conn.execute(FAIL_MESSAGE, message_id, error_code)


WEBHOOK_MESSAGE = "SELECT id, user_id, direction, sid FROM messages WHERE id = $1"
WEBHOOK_MESSAGE_BY_SID = "SELECT id, user_id, direction, sid FROM messages WHERE sid = $1"


async def find_webhook_message(conn: asyncpg.Connection, message_id: uuid.UUID | None,
                               sid: str) -> asyncpg.Record | None:
    """By the messageId we put in the StatusCallback URL, else by MessageSid."""
    if message_id is not None:
        return await conn.fetchrow(WEBHOOK_MESSAGE, message_id)
    return await conn.fetchrow(WEBHOOK_MESSAGE_BY_SID, sid)


MESSAGE_COLUMNS = """
m.id, m.user_id, m.contact_id, m.direction, m.from_number, m.to_number, m.body_ciphertext, m.body_nonce,
m.status, m.error_code, m.read_at, m.created_at, m.num_media, m.num_segments, m.encoding
"""
# First page and following pages are two statements, not one with `$3 IS NULL OR ...`: under the
# generic plan PostgreSQL caches after five runs, that form reads the whole thread to find a page.
LIST_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS} FROM messages m
WHERE m.user_id = $1 AND m.contact_id = $2
ORDER BY m.created_at DESC, m.id DESC
LIMIT $3
"""
LIST_MESSAGES_BEFORE = f"""
SELECT {MESSAGE_COLUMNS} FROM messages m
WHERE m.user_id = $1 AND m.contact_id = $2 AND (m.created_at, m.id) < ($4, $5)
ORDER BY m.created_at DESC, m.id DESC
LIMIT $3
"""


async def list_messages(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID,
                        before: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    if before is None:
        return await conn.fetch(LIST_MESSAGES, user_id, contact_id, limit)
    return await conn.fetch(LIST_MESSAGES_BEFORE, user_id, contact_id, limit, *before)


CONVERSATION_COLUMNS = f"""
c.contact_id, ct.phone_number, ct.name, ct.opted_out, c.unread_count, c.last_message_at, {MESSAGE_COLUMNS}
"""
LIST_CONVERSATIONS = f"""
SELECT {CONVERSATION_COLUMNS}
FROM conversations c
JOIN contacts ct ON ct.id = c.contact_id
JOIN messages m ON m.id = c.last_message_id
WHERE c.user_id = $1
ORDER BY c.last_message_at DESC, c.contact_id DESC
LIMIT $2
"""
LIST_CONVERSATIONS_BEFORE = f"""
SELECT {CONVERSATION_COLUMNS}
FROM conversations c
JOIN contacts ct ON ct.id = c.contact_id
JOIN messages m ON m.id = c.last_message_id
WHERE c.user_id = $1 AND (c.last_message_at, c.contact_id) < ($3, $4)
ORDER BY c.last_message_at DESC, c.contact_id DESC
LIMIT $2
"""


async def list_conversations(conn: asyncpg.Connection, user_id: str, before: tuple[datetime, uuid.UUID] | None,
                             limit: int) -> list[asyncpg.Record]:
    if before is None:
        return await conn.fetch(LIST_CONVERSATIONS, user_id, limit)
    return await conn.fetch(LIST_CONVERSATIONS_BEFORE, user_id, limit, *before)


MARK_READ = """
UPDATE messages SET read_at = now() WHERE user_id = $1 AND id = $2 AND read_at IS NULL
RETURNING contact_id, direction, read_at
"""
LOWER_UNREAD = "UPDATE conversations SET unread_count = unread_count - 1 WHERE contact_id = $1 AND unread_count > 0"
READ_AT = "SELECT read_at FROM messages WHERE user_id = $1 AND id = $2"


async def mark_read(conn: asyncpg.Connection, user_id: str, message_id: uuid.UUID) -> tuple[bool, datetime | None]:
    """(found, read_at). Only the first read of an inbound message lowers the unread count."""
    row = await conn.fetchrow(MARK_READ, user_id, message_id)
    if row is not None:
        if row["direction"] == "inbound":
            await conn.execute(LOWER_UNREAD, row["contact_id"])
        return True, row["read_at"]
    read_at = await conn.fetchrow(READ_AT, user_id, message_id)
    return (read_at is not None), (read_at["read_at"] if read_at else None)


# The summary row is locked first: an inbound message arriving meanwhile waits, then counts.
LOCK_CONVERSATION = "SELECT 1 FROM conversations WHERE user_id = $1 AND contact_id = $2 FOR UPDATE"
MARK_ALL_READ = """
UPDATE messages SET read_at = now() WHERE user_id = $1 AND contact_id = $2 AND read_at IS NULL
"""
RESET_UNREAD = "UPDATE conversations SET unread_count = 0 WHERE user_id = $1 AND contact_id = $2"


async def mark_conversation_read(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID) -> bool:
    """Everything in the conversation read; False when there is no such conversation."""
    if await conn.fetchval(LOCK_CONVERSATION, user_id, contact_id) is None:
        return False
    await conn.execute(MARK_ALL_READ, user_id, contact_id)
    await conn.execute(RESET_UNREAD, user_id, contact_id)
    return True


# -- media -------------------------------------------------------------------------------------

INSERT_MEDIA = """
INSERT INTO message_media (id, message_id, user_id, content_type, size_bytes, ciphertext, nonce, is_link, position)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


async def insert_media(conn: asyncpg.Connection, media_id: uuid.UUID, message_id: uuid.UUID, user_id: str,
                       content_type: str | None, size: int | None, sealed: tuple[bytes, bytes],
                       is_link: bool, position: int) -> None:
    await conn.execute(INSERT_MEDIA, media_id, message_id, user_id, content_type, size, sealed[0], sealed[1],
                       is_link, position)


INSERT_PENDING_MEDIA = """
INSERT INTO message_media (id, message_id, user_id, twilio_media_sid, content_type, source_url,
                           fetch_state, next_fetch_at, position)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', now(), $7)
ON CONFLICT (twilio_media_sid) DO NOTHING
"""


async def insert_pending_media(conn: asyncpg.Connection, media_id: uuid.UUID, message_id: uuid.UUID, user_id: str,
                               media_sid: str | None, content_type: str | None, url: str, position: int) -> None:
    """Inbound media to fetch after the webhook is answered; stored first, so never lost."""
    await conn.execute(INSERT_PENDING_MEDIA, media_id, message_id, user_id, media_sid, content_type, url, position)


MEDIA_COLUMNS = "id, message_id, user_id, content_type, size_bytes, ciphertext, nonce, is_link, fetch_state, created_at"
LIST_MEDIA = f"""
SELECT {MEDIA_COLUMNS} FROM message_media WHERE user_id = $1 AND message_id = ANY($2::uuid[])
ORDER BY message_id, position
"""


async def list_media(conn: asyncpg.Connection, user_id: str, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(LIST_MEDIA, user_id, message_ids)


GET_MEDIA = f"SELECT {MEDIA_COLUMNS} FROM message_media WHERE user_id = $1 AND message_id = $2 AND id = $3"


async def get_media(conn: asyncpg.Connection, user_id: str, message_id: uuid.UUID,
                    media_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_MEDIA, user_id, message_id, media_id)


GET_MEDIA_BY_ID = f"SELECT {MEDIA_COLUMNS} FROM message_media WHERE id = $1"


async def get_media_by_id(conn: asyncpg.Connection, media_id: uuid.UUID) -> asyncpg.Record | None:
    """For the signed media URLs given to Twilio: the signature, not a user, authorises them."""
    return await conn.fetchrow(GET_MEDIA_BY_ID, media_id)


CLAIM_PENDING_MEDIA = """
UPDATE message_media SET next_fetch_at = $1 + make_interval(secs => $3)
WHERE id IN (
    SELECT id FROM message_media WHERE fetch_state = 'pending' AND next_fetch_at <= $1
    ORDER BY next_fetch_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING id, message_id, user_id, source_url, content_type, fetch_attempts
"""


async def claim_pending_media(conn: asyncpg.Connection, now: datetime, limit: int,
                              lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_PENDING_MEDIA, now, limit, lease_s)


STORE_FETCHED = """
UPDATE message_media SET ciphertext = $2, nonce = $3, size_bytes = $4, content_type = $5,
       fetch_state = 'done', fetch_error = NULL, source_url = NULL, next_fetch_at = NULL
WHERE id = $1
"""


async def store_fetched_media(conn: asyncpg.Connection, media_id: uuid.UUID, sealed: tuple[bytes, bytes],
                              size: int, content_type: str) -> None:
    await conn.execute(STORE_FETCHED, media_id, sealed[0], sealed[1], size, content_type)


RETRY_MEDIA = """
UPDATE message_media SET fetch_attempts = fetch_attempts + 1, next_fetch_at = $2, fetch_error = $3,
       fetch_state = CASE WHEN $4 THEN 'failed' ELSE 'pending' END
WHERE id = $1
"""


async def retry_media(conn: asyncpg.Connection, media_id: uuid.UUID, next_at: datetime, error: str,
                      give_up: bool) -> None:
    await conn.execute(RETRY_MEDIA, media_id, next_at, error, give_up)


# -- prices ------------------------------------------------------------------------------------

CLAIM_DUE_PRICES = """
UPDATE messages SET price_next_at = $1 + make_interval(secs => $3)
WHERE id IN (
    SELECT id FROM messages
    WHERE price_state = 'pending' AND sid IS NOT NULL AND status_rank = 3 AND price_next_at <= $1
    ORDER BY price_next_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING id, ARRAY[sid] AS legs, updated_at AS ended_at, price_attempts
"""


async def claim_due_prices(conn: asyncpg.Connection, now: datetime, limit: int,
                           lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_DUE_PRICES, now, limit, lease_s)


SET_PRICE = """
UPDATE messages SET price = $2, price_unit = $3, price_state = 'done', price_next_at = NULL WHERE id = $1
"""


async def set_price(conn: asyncpg.Connection, message_id: uuid.UUID, price: Decimal, unit: str) -> None:
    await conn.execute(SET_PRICE, message_id, price, unit)


RESCHEDULE_PRICE = """
UPDATE messages SET price_attempts = price_attempts + 1, price_next_at = $2,
       price_state = CASE WHEN $3 THEN 'gave_up' ELSE 'pending' END
WHERE id = $1
"""


async def reschedule_price(conn: asyncpg.Connection, message_id: uuid.UUID, next_at: datetime,
                           give_up: bool) -> None:
    await conn.execute(RESCHEDULE_PRICE, message_id, next_at, give_up)
