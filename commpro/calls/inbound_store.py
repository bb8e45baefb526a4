"""SQL for an inbound call's webhook: the number, the call and its event in one statement.

One round trip and no BEGIN/COMMIT (the statement is its own transaction, committed before the
TwiML goes back). Idempotent on the CallSid: a retry, or a duplicate arriving at the same moment
(it waits on the first one's row), inserts nothing and publishes nothing, and finds the call the
first one made with a second, rarer, statement.
"""

from __future__ import annotations

import uuid

import asyncpg

from commpro.calls.leg_store import CONNECT_CALL
from commpro.events.store import NOTIFY_EVENT, PUBLISH_CTES
from commpro.ids import uuid7
from commpro.numbers.store import NUMBER_COLUMNS

# $1 To (the number called), $2 a new call id, $3 CallSid, $4 From. No row: not one of our
# numbers. `registered_identity`: the app identity the owner registered (calls/devices.py).
INSERT_INBOUND_CALL = f"""
WITH num AS (
    SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE e164 = $1
), call AS (
    INSERT INTO calls (id, user_id, phone_number_id, sid, direction, from_number, to_number, status, status_rank)
    SELECT $2, user_id, id, $3, 'inbound', $4, $1, 'ringing', 1 FROM num
    ON CONFLICT (sid) DO NOTHING
    RETURNING id, user_id
), published AS (
    SELECT user_id, 'call.created' AS type,
           jsonb_build_object('callId', id, 'direction', 'inbound', 'status', 'ringing') AS payload
    FROM call
), {PUBLISH_CTES}
SELECT num.*, call.id IS NOT NULL AS created,
       (SELECT r.identity FROM app_registrations r WHERE r.user_id = num.user_id) AS registered_identity
FROM num LEFT JOIN call ON true {NOTIFY_EVENT}
"""
INBOUND_CALL_ID = "SELECT id FROM calls WHERE sid = $1"


async def insert_inbound_call(conn: asyncpg.Connection, to_number: str, sid: str,
                              from_number: str) -> tuple[asyncpg.Record | None, uuid.UUID | None]:
    """(the number with `registered_identity`, the call's id): the call is stored and its
    call.created event published, once per CallSid; run it outside a transaction (it is one).
    (None, None) when `to_number` is not ours."""
    call_id = uuid7()
    number = await conn.fetchrow(INSERT_INBOUND_CALL, to_number, call_id, sid, from_number)
    if number is None:
        return None, None
    if not number["created"]:  # committed by the first delivery, now that this one has waited for it
        call_id = await conn.fetchval(INBOUND_CALL_ID, sid)
    return number, call_id


# An inbound call that TwiML connects at once (to voicemail): in progress, and its owner told.
CONNECT_INBOUND_CALL = f"""
WITH moved AS ({CONNECT_CALL.strip()}
    RETURNING id, user_id
), published AS (
    SELECT user_id, 'call.status' AS type, jsonb_build_object('callId', id, 'status', 'in-progress') AS payload
    FROM moved
), {PUBLISH_CTES}
SELECT notified.seq FROM (VALUES (1)) AS one (n) {NOTIFY_EVENT}
"""


async def connect_inbound_call(conn: asyncpg.Connection, call_id: uuid.UUID) -> bool:
    """answering.call_connected in one statement, its own transaction: True when this moved the
    call to in-progress (and published call.status), False when it already was (a retry)."""
    return await conn.fetchval(CONNECT_INBOUND_CALL, call_id) is not None
