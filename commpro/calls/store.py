"""SQL for calls. Store functions take a connection; the caller owns the transaction.

A call's status only moves forward: each status has a rank (queued and initiated 0, ringing 1,
in-progress 2, every terminal status 3), and an update applies only when it raises the rank, or
keeps it below terminal with a higher SequenceNumber. Late and duplicate callbacks change nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg

from commpro.sqlparts import and_filters

STATUS_RANK = {
    "queued": 0, "initiated": 0, "ringing": 1, "in-progress": 2,
    "completed": 3, "busy": 3, "no-answer": 3, "failed": 3, "canceled": 3,
}
TERMINAL_RANK = 3
# Twilio's statuses, and ours for a call whose create Twilio never answered (rank 0 too).
STATUSES = ("unconfirmed", *STATUS_RANK)
# Why the sweep ended a call Twilio never confirmed; a later webhook that proves it exists revives it.
NEVER_CONFIRMED = "never confirmed by Twilio"

CALL_COLUMNS = """
id, user_id, sid, dial_sid, direction, from_number, to_number, status, created_at, answered_at,
ended_at, duration_s, price, price_unit, recording_sid, recording_url, recording_duration_s,
voicemail, error_code, error_message, answered_by, phone_number_id, transcript_status,
transcript_ciphertext, transcript_nonce, transcript_at
"""

INSERT_OUTBOUND_CALL = f"""
INSERT INTO calls (user_id, phone_number_id, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, 'outbound', $3, $4, 'initiated', 0)
RETURNING {CALL_COLUMNS}
"""


async def insert_outbound_call(conn: asyncpg.Connection, user_id: str, number_id: uuid.UUID,
                               from_number: str, to_number: str) -> asyncpg.Record:
    """A call from POST /api/calls/initiate, before Twilio is asked to place it."""
    return await conn.fetchrow(INSERT_OUTBOUND_CALL, user_id, number_id, from_number, to_number)


INSERT_INBOUND_CALL = """
INSERT INTO calls (user_id, phone_number_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, 'inbound', $4, $5, 'ringing', 1)
ON CONFLICT (sid) DO NOTHING
RETURNING id
"""
CALL_ID_BY_SID = "SELECT id FROM calls WHERE sid = $1"


async def insert_inbound_call(conn: asyncpg.Connection, user_id: str, number_id: uuid.UUID, sid: str,
                              from_number: str, to_number: str) -> tuple[uuid.UUID, bool]:
    """(id, created). Idempotent on the CallSid: Twilio's retries find the row the first made."""
    call_id = await conn.fetchval(INSERT_INBOUND_CALL, user_id, number_id, sid, from_number, to_number)
    if call_id is not None:
        return call_id, True
    return await conn.fetchval(CALL_ID_BY_SID, sid), False


INSERT_APP_CALL = """
INSERT INTO calls (user_id, phone_number_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, 'outbound', $4, $5, 'initiated', 0)
ON CONFLICT (sid) DO NOTHING
RETURNING id
"""


async def insert_app_call(conn: asyncpg.Connection, user_id: str, number_id: uuid.UUID, sid: str,
                          from_number: str, to_number: str) -> uuid.UUID:
    """A call the mobile app placed through the TwiML app; idempotent on its CallSid."""
    call_id = await conn.fetchval(INSERT_APP_CALL, user_id, number_id, sid, from_number, to_number)
    return call_id or await conn.fetchval(CALL_ID_BY_SID, sid)


SET_CALL_SID = "UPDATE calls SET sid = $2, updated_at = now() WHERE id = $1 AND sid IS NULL"


async def set_call_sid(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str) -> None:
    await conn.execute(SET_CALL_SID, call_id, sid)


# A webhook that carries our callId proves Twilio placed the call: the row takes its SID, and a
# row that was unconfirmed, or that the sweep ended as never confirmed, is initiated again.
ADOPT_CALL_SID = """
UPDATE calls c SET sid = $2,
    status = CASE WHEN c.status = 'unconfirmed' OR c.status_rank = 3 THEN 'initiated' ELSE c.status END,
    status_rank = CASE WHEN c.status_rank = 3 THEN 0 ELSE c.status_rank END,
    ended_at = CASE WHEN c.status_rank = 3 THEN NULL ELSE c.ended_at END,
    duration_s = CASE WHEN c.status_rank = 3 THEN NULL ELSE c.duration_s END,
    error_message = CASE WHEN c.status_rank = 3 THEN NULL ELSE c.error_message END,
    price_state = 'pending', updated_at = now()
FROM (SELECT id, status FROM calls WHERE id = $1 FOR UPDATE) old
WHERE c.id = old.id AND c.sid IS NULL AND (c.status_rank < 3 OR c.error_message = $3)
RETURNING old.status AS old_status
"""


async def adopt_call_sid(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str) -> bool:
    """Give an API-placed call the SID a webhook brought. True when that confirmed a call that
    stood as unconfirmed, or as failed by the sweep: it is initiated again."""
    old = await conn.fetchval(ADOPT_CALL_SID, call_id, sid, NEVER_CONFIRMED)
    return old is not None and old != "initiated"


MARK_UNCONFIRMED = """
UPDATE calls SET status = 'unconfirmed', updated_at = now()
WHERE id = $1 AND sid IS NULL AND status = 'initiated'
"""


async def mark_unconfirmed(conn: asyncpg.Connection, call_id: uuid.UUID) -> bool:
    """Twilio's answer to the create never came: True when the row now says so."""
    return await conn.execute(MARK_UNCONFIRMED, call_id) == "UPDATE 1"


SWEEP_UNCONFIRMED = """
UPDATE calls SET status = 'failed', status_rank = 3, error_message = $2, ended_at = now(), duration_s = 0,
       price_state = 'done', updated_at = now()
WHERE id IN (
    SELECT id FROM calls
    WHERE sid IS NULL AND status_rank < 3 AND direction = 'outbound' AND created_at < $1
    ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
RETURNING id, user_id
"""


async def sweep_unconfirmed(conn: asyncpg.Connection, before: datetime, limit: int) -> list[asyncpg.Record]:
    """End the API-placed calls that no webhook confirmed since before `before`."""
    return await conn.fetch(SWEEP_UNCONFIRMED, before, NEVER_CONFIRMED, limit)


SET_DIAL_SID = "UPDATE calls SET dial_sid = $2, updated_at = now() WHERE id = $1 AND dial_sid IS NULL"


async def set_dial_sid(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str) -> None:
    await conn.execute(SET_DIAL_SID, call_id, sid)


FAIL_CALL = """
UPDATE calls SET status = 'failed', status_rank = 3, error_code = $2, error_message = $3,
       ended_at = coalesce(ended_at, now()), duration_s = coalesce(duration_s, 0),
       price_state = CASE WHEN sid IS NULL THEN 'done' ELSE price_state END, updated_at = now()
WHERE id = $1 AND status_rank < 3
"""


async def fail_call(conn: asyncpg.Connection, call_id: uuid.UUID, error_code: int | None, reason: str) -> None:
    """End a call that Twilio never placed (or that failed on our side)."""
    await conn.execute(FAIL_CALL, call_id, error_code, reason)


APPLY_STATUS = """
UPDATE calls SET
    status = $2, status_rank = $3, sequence_number = $4,
    answered_at = CASE WHEN NOT $7 THEN answered_at ELSE coalesce(answered_at, CASE
        WHEN $2 = 'in-progress' THEN now()
        WHEN $2 = 'completed' AND $5 > 0 THEN now() - make_interval(secs => $5) END) END,
    ended_at = CASE WHEN $3 = 3 THEN coalesce(ended_at, now()) ELSE ended_at END,
    duration_s = CASE WHEN $3 = 3 THEN coalesce($5, duration_s, 0) ELSE duration_s END,
    error_code = coalesce($6, error_code),
    updated_at = now()
WHERE id = $1
  AND (status_rank < $3 OR (status_rank = $3 AND $3 < 3 AND coalesce(sequence_number, -1) < $4))
"""


async def apply_status(conn: asyncpg.Connection, call_id: uuid.UUID, status: str, sequence: int,
                       duration_s: int | None, error_code: int | None, *, answers: bool) -> bool:
    """Move the call to `status` if that is forward; True when it moved. `answers`: this leg
    being in progress means the callee answered (the destination's leg, not a caller's)."""
    result = await conn.execute(APPLY_STATUS, call_id, status, STATUS_RANK[status], sequence,
                                duration_s, error_code, answers)
    return result == "UPDATE 1"


SET_ANSWERED = "UPDATE calls SET answered_at = coalesce(answered_at, now()), updated_at = now() WHERE id = $1"


async def set_answered(conn: asyncpg.Connection, call_id: uuid.UUID) -> None:
    await conn.execute(SET_ANSWERED, call_id)


WEBHOOK_CALL = f"SELECT {CALL_COLUMNS}, status_rank FROM calls WHERE id = $1"
# Any leg's SID finds its call: the call's own, or any child leg kept in call_legs.
WEBHOOK_CALL_BY_SID = f"""
SELECT {CALL_COLUMNS}, status_rank FROM calls
WHERE sid = $1 OR dial_sid = $1 OR id = (SELECT call_id FROM call_legs WHERE sid = $1)
"""


# The same, locking the call first: a status callback run alone takes the call, then its legs,
# in the order the batches take them (sql/0012), so that the two wait rather than deadlock.
LOCK_SUFFIX = "\nFOR UPDATE"


async def find_webhook_call(conn: asyncpg.Connection, call_id: uuid.UUID | None,
                            sid: str | None, *, lock: bool = False) -> asyncpg.Record | None:
    """The call a Twilio webhook is about: by the callId we put in its URL, else by CallSid.
    Webhooks carry no user: their signature is what authorises them. `lock`: FOR UPDATE, in the
    caller's transaction."""
    suffix = LOCK_SUFFIX if lock else ""
    if call_id is not None:
        return await conn.fetchrow(WEBHOOK_CALL + suffix, call_id)
    if sid:
        return await conn.fetchrow(WEBHOOK_CALL_BY_SID + suffix, sid)
    return None


# Many status callbacks in one statement (call_status_callbacks, sql/0012, set-based): for each
# item, in order, what status_callback does in Python, or 'unknown' (no such call), or 'slow' (left to it).
STATUS_CALLBACKS = "SELECT n, outcome FROM call_status_callbacks($1::jsonb, $2, $3, $4, $5, $6) ORDER BY n"


async def apply_status_callbacks(conn: asyncpg.Connection, items: list[dict], *, price_kind: str, price_after_s: float,
                                 quality_kind: str, quality_after_s: float, channel: str) -> list[str]:
    """Each item's outcome: 'done', 'unknown' or 'slow'. Items are webhooks.status_item's."""
    rows = await conn.fetch(STATUS_CALLBACKS, [{**item, "n": n} for n, item in enumerate(items)], price_kind,
                            float(price_after_s), quality_kind, float(quality_after_s), channel)
    return [row["outcome"] for row in rows]


# A repeated callback never brings back a recording the user deleted, and a voicemail never
# takes the place of the call's own (<Dial record>) recording, which would then never be deleted
# at Twilio.
SET_RECORDING = """
UPDATE calls SET recording_sid = $2, recording_url = $3, recording_duration_s = $4,
       voicemail = voicemail OR $5, updated_at = now()
WHERE id = $1 AND recording_deleted_at IS NULL
  AND (recording_sid IS NULL OR recording_sid = $2 OR voicemail)
"""


async def set_recording(conn: asyncpg.Connection, call_id: uuid.UUID, recording_sid: str, url: str,
                        duration_s: int | None, voicemail: bool) -> None:
    await conn.execute(SET_RECORDING, call_id, recording_sid, url, duration_s, voicemail)


GET_CALL = f"SELECT {CALL_COLUMNS} FROM calls WHERE user_id = $1 AND id = $2"


async def get_call(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_CALL, user_id, call_id)


def list_status(status: str) -> str:
    """calls.list_status (sql/0014) of a call in `status`: the status once it has ended, else 'live'."""
    return status if STATUS_RANK.get(status) == TERMINAL_RANK else "live"


# The filters present pick the statement (see commpro.sqlparts): each combination keeps its
# bounds in the index scan, even under the generic plan PostgreSQL caches after a few runs.
# A status is looked up by `list_status` (calls_user_list_status_idx, sql/0014), then checked.
LIST_CALLS_FILTERS = {
    "direction": "direction = {}",
    "status": "list_status = {} AND status = {}",
    "since": "created_at >= {}",
    "until": "created_at < {}",
    "before": "(created_at, id) < ({}, {})",
}
LIST_CALLS = f"""
SELECT {CALL_COLUMNS} FROM calls
WHERE user_id = $1{{filters}}
ORDER BY created_at DESC, id DESC
LIMIT {{limit}}
"""
# OFFSET is linear: the skipped rows are read from the covering index only (calls_user_created_idx,
# an index-only scan), and the page's few rows are fetched after.
LIST_CALLS_OFFSET = f"""
SELECT {CALL_COLUMNS} FROM calls
JOIN (SELECT id FROM calls
      WHERE user_id = $1{{filters}}
      ORDER BY created_at DESC, id DESC
      LIMIT {{limit}} OFFSET {{offset}}) page USING (id)
WHERE user_id = $1
ORDER BY created_at DESC, id DESC
"""


async def list_calls(conn: asyncpg.Connection, user_id: str, *, direction: str | None, status: str | None,
                     since: datetime | None, until: datetime | None, before: tuple[datetime, uuid.UUID] | None,
                     limit: int, offset: int) -> list[asyncpg.Record]:
    filters, args = and_filters(LIST_CALLS_FILTERS, {
        "direction": direction, "status": None if status is None else (list_status(status), status),
        "since": since, "until": until, "before": before,
    }, first=2)
    n = len(args) + 2
    if offset:
        query = LIST_CALLS_OFFSET.format(filters=filters, limit=f"${n}", offset=f"${n + 1}")
        return await conn.fetch(query, user_id, *args, limit, offset)
    return await conn.fetch(LIST_CALLS.format(filters=filters, limit=f"${n}"), user_id, *args, limit)


# What the price job fetches: the call's own leg and every child leg Twilio bills (the answered
# ones: a canceled or unanswered leg costs nothing), while it has no price. None: nothing to price.
PRICE_LEGS = """
SELECT CASE WHEN sid IS NULL THEN '{}'::text[] ELSE ARRAY[sid] || ARRAY(
    SELECT l.sid FROM call_legs l WHERE l.call_id = calls.id AND l.status = 'completed' ORDER BY l.sid
) END
FROM calls WHERE id = $1 AND price_state = 'pending'
"""


async def price_legs(conn: asyncpg.Connection, call_id: uuid.UUID) -> list[str] | None:
    return await conn.fetchval(PRICE_LEGS, call_id)


SET_PRICE = """
UPDATE calls SET price = $2, price_unit = $3, price_state = 'done', price_next_at = NULL, updated_at = now()
WHERE id = $1
"""


async def set_price(conn: asyncpg.Connection, call_id: uuid.UUID, price: Decimal, unit: str) -> None:
    await conn.execute(SET_PRICE, call_id, price, unit)


PRICE_GAVE_UP = "UPDATE calls SET price_state = 'gave_up' WHERE id = $1 AND price_state = 'pending'"


async def price_gave_up(conn: asyncpg.Connection, call_id: uuid.UUID) -> None:
    await conn.execute(PRICE_GAVE_UP, call_id)
