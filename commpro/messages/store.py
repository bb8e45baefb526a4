"""SQL for contacts, messages and conversation summaries (media: messages.media_store).

Each conversation's summary (last message, unread count) changes in the same transaction as the
message that changes it, so the conversation list reads one row per conversation and never
scans messages. A message status only moves forward, in the order of STATUS_RANK: every value of
Twilio's message_enum_status, so that callbacks arriving late, twice or shuffled end on the last
real status of any real sequence (accepted, scheduled, queued, sending, sent, delivered, read; or
..., sent, undelivered; or ..., scheduled, canceled).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg

STATUS_RANK = {
    "accepted": 0, "scheduled": 1, "queued": 2, "sending": 3, "sent": 4, "receiving": 4,
    "partially_delivered": 5, "delivered": 6, "received": 6, "read": 7,
    "undelivered": 8, "failed": 8, "canceled": 8,
}
# From here on a message is final: Twilio has a price for it, and its content can be erased
# there. `read` (WhatsApp) may still follow `delivered`.
FINAL_RANK = 6
# Nothing follows canceled, failed or undelivered.
TERMINAL_RANK = 8
# Our own status for a message whose create Twilio never answered keeps queued's rank.
QUEUED_RANK = STATUS_RANK["queued"]
# Why the sweep ended a message Twilio never confirmed; a later status callback revives it.
NEVER_CONFIRMED = "never confirmed by Twilio"

# -- contacts ----------------------------------------------------------------------------------

# DO UPDATE (a no-op) rather than DO NOTHING, so that the existing row is returned.
UPSERT_CONTACT = """
INSERT INTO contacts (user_id, phone_number) VALUES ($1, $2)
ON CONFLICT (user_id, phone_number) DO UPDATE SET phone_number = excluded.phone_number
RETURNING id, phone_number, opted_out, blocked
"""


async def upsert_contact(conn: asyncpg.Connection, user_id: str, phone_number: str) -> asyncpg.Record:
    return await conn.fetchrow(UPSERT_CONTACT, user_id, phone_number)


SET_OPT_OUT = """
UPDATE contacts SET opted_out = $3, opted_out_at = CASE WHEN $3 THEN now() END
WHERE user_id = $1 AND phone_number = $2
"""


async def set_opt_out(conn: asyncpg.Connection, user_id: str, phone_number: str, opted_out: bool) -> None:
    await conn.execute(SET_OPT_OUT, user_id, phone_number, opted_out)


CONTACT_NAME_COLUMNS = "name_ciphertext, name_nonce, name_sealed_at"
GET_CONTACT = f"""
SELECT id, user_id, phone_number, opted_out, blocked, {CONTACT_NAME_COLUMNS} FROM contacts WHERE user_id = $1 AND id = $2
"""


async def get_contact(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_CONTACT, user_id, contact_id)


# -- messages ----------------------------------------------------------------------------------

INSERT_OUTBOUND = """
INSERT INTO messages (id, user_id, contact_id, phone_number_id, direction, from_number, to_number,
                      body_ciphertext, body_nonce, status, status_rank, encoding, num_media)
VALUES ($1, $2, $3, $4, 'outbound', $5, $6, $7, $8, 'queued', 2, $9, $10)
RETURNING created_at
"""


async def insert_outbound(conn: asyncpg.Connection, message_id: uuid.UUID, user_id: str, contact_id: uuid.UUID,
                          number_id: uuid.UUID, from_number: str, to_number: str, sealed: tuple[bytes, bytes] | None,
                          encoding: str, num_media: int) -> datetime:
    """num_segments stays NULL until Twilio has counted (set_twilio_counts)."""
    ciphertext, nonce = sealed or (None, None)
    created_at = await conn.fetchval(INSERT_OUTBOUND, message_id, user_id, contact_id, number_id, from_number,
                                     to_number, ciphertext, nonce, encoding, num_media)
    await touch_conversation(conn, user_id, contact_id, message_id, created_at, unread=0)
    return created_at


# How a message changes its conversation's summary (`c`): the newest message is the last one,
# unread counts add up.
CONVERSATION_CHANGE = """
ON CONFLICT (contact_id) DO UPDATE SET
    last_message_id = CASE WHEN excluded.last_message_at >= c.last_message_at
                           THEN excluded.last_message_id ELSE c.last_message_id END,
    last_message_at = greatest(c.last_message_at, excluded.last_message_at),
    unread_count = c.unread_count + excluded.unread_count"""
TOUCH_CONVERSATION = f"""
INSERT INTO conversations AS c (contact_id, user_id, last_message_id, last_message_at, unread_count)
VALUES ($1, $2, $3, $4, $5)
{CONVERSATION_CHANGE}
"""


async def touch_conversation(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID,
                             message_id: uuid.UUID, at: datetime, unread: int) -> None:
    await conn.execute(TOUCH_CONVERSATION, contact_id, user_id, message_id, at, unread)


SET_MESSAGE_SID = "UPDATE messages SET sid = $2, updated_at = now() WHERE id = $1 AND sid IS NULL"


async def set_message_sid(conn: asyncpg.Connection, message_id: uuid.UUID, sid: str) -> None:
    await conn.execute(SET_MESSAGE_SID, message_id, sid)


# A status callback with our messageId proves Twilio took the message: it takes the SID, and one
# that was unconfirmed, or that the sweep ended as never confirmed, is queued again.
ADOPT_MESSAGE_SID = """
UPDATE messages m SET sid = $2,
    status = CASE WHEN m.status = 'unconfirmed' OR m.status_rank = $4 THEN 'queued' ELSE m.status END,
    status_rank = CASE WHEN m.status_rank = $4 THEN $5 ELSE m.status_rank END,
    error_message = CASE WHEN m.status_rank = $4 THEN NULL ELSE m.error_message END,
    price_state = 'pending', updated_at = now()
FROM (SELECT id, status FROM messages WHERE id = $1 FOR UPDATE) old
WHERE m.id = old.id AND m.sid IS NULL AND (m.status_rank < $4 OR m.error_message = $3)
RETURNING old.status AS old_status
"""


async def adopt_message_sid(conn: asyncpg.Connection, message_id: uuid.UUID, sid: str) -> bool:
    """True when that confirmed a message that stood unconfirmed or failed by the sweep."""
    old = await conn.fetchval(ADOPT_MESSAGE_SID, message_id, sid, NEVER_CONFIRMED, TERMINAL_RANK, QUEUED_RANK)
    return old is not None and old != "queued"


MARK_UNCONFIRMED = """
UPDATE messages SET status = 'unconfirmed', updated_at = now()
WHERE id = $1 AND sid IS NULL AND status = 'queued'
"""


async def mark_unconfirmed(conn: asyncpg.Connection, message_id: uuid.UUID) -> bool:
    return await conn.execute(MARK_UNCONFIRMED, message_id) == "UPDATE 1"


SWEEP_UNCONFIRMED = """
UPDATE messages SET status = 'failed', status_rank = $4, error_message = $2, price_state = 'done',
       updated_at = now()
WHERE id IN (
    SELECT id FROM messages
    WHERE sid IS NULL AND status_rank < $4 AND direction = 'outbound' AND created_at < $1
    ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
RETURNING id, user_id
"""


async def sweep_unconfirmed(conn: asyncpg.Connection, before: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SWEEP_UNCONFIRMED, before, NEVER_CONFIRMED, limit, TERMINAL_RANK)


OWN_MESSAGE = "SELECT id, status, sid, num_segments, encoding FROM messages WHERE user_id = $1 AND id = $2"


async def get_own_message(conn: asyncpg.Connection, user_id: str, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(OWN_MESSAGE, user_id, message_id)


# A canceled message was never sent: Twilio has nothing to price.
APPLY_STATUS = """
UPDATE messages SET status = $2, status_rank = $3, error_code = coalesce($4, error_code),
       error_message = coalesce($5, error_message),
       price_state = CASE WHEN $2 = 'canceled' THEN 'done' ELSE price_state END,
       updated_at = now()
WHERE id = $1 AND status_rank < $3
"""


async def apply_status(conn: asyncpg.Connection, message_id: uuid.UUID, status: str, error_code: int | None,
                       error_message: str | None) -> bool:
    """Move the message forward to `status`; False when it is already there or beyond."""
    result = await conn.execute(APPLY_STATUS, message_id, status, STATUS_RANK[status], error_code, error_message)
    return result == "UPDATE 1"


# Twilio's 0 means "not counted yet" (a Messaging Service before it has picked a sender).
SET_TWILIO_COUNTS = """
UPDATE messages SET num_segments = CASE WHEN $2 > 0 THEN $2 ELSE num_segments END,
       error_code = coalesce($3, error_code), error_message = coalesce($4, error_message)
WHERE id = $1
"""


async def set_twilio_counts(conn: asyncpg.Connection, message_id: uuid.UUID, segments: int | None,
                            error_code: int | None = None, error_message: str | None = None) -> None:
    """What Twilio's create response or a later fetch says: its segment count is the billed one."""
    await conn.execute(SET_TWILIO_COUNTS, message_id, segments or 0, error_code, error_message)


FAIL_MESSAGE = """
UPDATE messages SET status = 'failed', status_rank = $3, error_code = $2, price_state = 'done', updated_at = now()
WHERE id = $1 AND status_rank < $3
"""


async def fail_message(conn: asyncpg.Connection, message_id: uuid.UUID, error_code: int | None) -> None:
    """A message Twilio never accepted: failed, and nothing to price."""
    await conn.execute(FAIL_MESSAGE, message_id, error_code, TERMINAL_RANK)


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
m.status, m.error_code, m.error_message, m.read_at, m.created_at, m.num_media, m.num_segments, m.encoding
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
c.contact_id, ct.phone_number, ct.opted_out, ct.blocked, ct.name_ciphertext, ct.name_nonce, ct.name_sealed_at,
c.unread_count, c.last_message_at, {MESSAGE_COLUMNS}
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
# The messages locked in id order, as the status batches lock them (sql/0012): an update locks
# rows in whatever order its plan finds them, and a batch holding one of two would deadlock with it.
MARK_ALL_READ = """
UPDATE messages SET read_at = now()
WHERE id IN (SELECT id FROM messages WHERE user_id = $1 AND contact_id = $2 AND read_at IS NULL
             ORDER BY id FOR UPDATE)
  AND read_at IS NULL
"""
RESET_UNREAD = "UPDATE conversations SET unread_count = 0 WHERE user_id = $1 AND contact_id = $2"


async def mark_conversation_read(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID) -> bool:
    """Everything in the conversation read; False when there is no such conversation."""
    if await conn.fetchval(LOCK_CONVERSATION, user_id, contact_id) is None:
        return False
    await conn.execute(MARK_ALL_READ, user_id, contact_id)
    await conn.execute(RESET_UNREAD, user_id, contact_id)
    return True


# -- prices ------------------------------------------------------------------------------------

# What the price job fetches: the message while it has no price. None: nothing to price.
PRICE_LEGS = """
SELECT CASE WHEN sid IS NULL THEN '{}'::text[] ELSE ARRAY[sid] END FROM messages
WHERE id = $1 AND price_state = 'pending'
"""


async def price_legs(conn: asyncpg.Connection, message_id: uuid.UUID) -> list[str] | None:
    return await conn.fetchval(PRICE_LEGS, message_id)


SET_PRICE = """
UPDATE messages SET price = $2, price_unit = $3, price_state = 'done', price_next_at = NULL WHERE id = $1
"""


async def set_price(conn: asyncpg.Connection, message_id: uuid.UUID, price: Decimal, unit: str) -> None:
    await conn.execute(SET_PRICE, message_id, price, unit)


PRICE_GAVE_UP = "UPDATE messages SET price_state = 'gave_up' WHERE id = $1 AND price_state = 'pending'"


async def price_gave_up(conn: asyncpg.Connection, message_id: uuid.UUID) -> None:
    await conn.execute(PRICE_GAVE_UP, message_id)
