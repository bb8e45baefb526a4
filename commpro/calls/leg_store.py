"""SQL for the legs of a call: every <Dial> target (the user's app and phone, or an outbound
call's destination) is kept with its own status, so that every billed leg is priced and the
device that took the call is known. Store functions take a connection; the caller owns the
transaction.

"Accepted" is what a business phone means by answered: an app leg accepts by answering (the user
tapped on the device); a screened phone leg only when the person pressed the key, because a
carrier voicemail answers too. The first leg accepted takes the call; later ones lose.
"""

from __future__ import annotations

import uuid

import asyncpg

from commpro.calls.store import STATUS_RANK, TERMINAL_RANK

# Forward only, as for calls: a higher rank, or the same non-terminal rank with a higher
# SequenceNumber. The first callback Twilio sends may be any of them.
UPSERT_LEG = """
INSERT INTO call_legs (sid, call_id, device, target, status, status_rank, sequence_number,
                       answered_at, ended_at, duration_s)
VALUES ($1, $2, $3, $4, $5::text, $6::int, $7::int,
        CASE WHEN $5::text = 'in-progress' THEN now()
             WHEN $5::text = 'completed' AND $8::int > 0 THEN now() - make_interval(secs => $8::int) END,
        CASE WHEN $6::int = $9::int THEN now() END,
        CASE WHEN $6::int = $9::int THEN coalesce($8::int, 0) END)
ON CONFLICT (sid) DO UPDATE SET
    status = EXCLUDED.status, status_rank = EXCLUDED.status_rank, sequence_number = EXCLUDED.sequence_number,
    answered_at = coalesce(call_legs.answered_at, EXCLUDED.answered_at),
    ended_at = coalesce(call_legs.ended_at, EXCLUDED.ended_at),
    duration_s = coalesce(EXCLUDED.duration_s, call_legs.duration_s)
WHERE call_legs.status_rank < EXCLUDED.status_rank
   OR (call_legs.status_rank = EXCLUDED.status_rank AND EXCLUDED.status_rank < $9::int
       AND coalesce(call_legs.sequence_number, -1) < EXCLUDED.sequence_number)
"""


async def record_leg(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str, device: str, target: str,
                     status: str, sequence: int, duration_s: int | None) -> None:
    """Keep a leg's status (idempotent on its SID; late and duplicate callbacks change nothing)."""
    await conn.execute(UPSERT_LEG, sid, call_id, device, target, status, STATUS_RANK[status], sequence,
                       duration_s, TERMINAL_RANK)


# The leg may not have reported yet (callbacks race the screening webhook): make it exist.
MARK_ACCEPTED = """
INSERT INTO call_legs (sid, call_id, device, target, status, status_rank, answered_at, accepted_at)
VALUES ($1, $2, $3, $4, 'in-progress', 2, now(), now())
ON CONFLICT (sid) DO UPDATE SET accepted_at = coalesce(call_legs.accepted_at, now()),
                                answered_at = coalesce(call_legs.answered_at, now())
"""
# The call takes the first leg accepted, and only while it is still going: a caller who hung up
# during the screening is not connected to anyone.
TAKE_CALL = """
UPDATE calls SET answered_by = $2, answered_leg_sid = $3, updated_at = now()
WHERE id = $1 AND answered_by IS NULL AND status_rank < 3
"""


async def take_call(conn: asyncpg.Connection, call_id: uuid.UUID, device: str, sid: str) -> bool:
    """`device` ('app' or 'phone') took the call on leg `sid`; True unless another leg had, or
    the call had ended. The row lock on the call orders two legs accepting at once."""
    return await conn.execute(TAKE_CALL, call_id, device, sid) == "UPDATE 1"


async def accept_leg(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str, device: str, target: str) -> bool:
    """The person on this child leg accepted the call; True when this leg took it."""
    await conn.execute(MARK_ACCEPTED, sid, call_id, device, target)
    return await take_call(conn, call_id, device, sid)


# Twilio reports an inbound call's own leg only when it ends: CommPro knows when it connected it
# (to a device that accepted, or to voicemail).
CONNECT_CALL = """
UPDATE calls SET status = 'in-progress', status_rank = 2, updated_at = now()
WHERE id = $1 AND status_rank < 2
"""


async def mark_in_progress(conn: asyncpg.Connection, call_id: uuid.UUID) -> bool:
    return await conn.execute(CONNECT_CALL, call_id) == "UPDATE 1"


CALL_LEGS = """
SELECT sid, device, status, answered_at, ended_at, duration_s, accepted_at IS NOT NULL AS accepted
FROM call_legs WHERE call_id = $1 ORDER BY created_at, sid
"""


async def legs_of(conn: asyncpg.Connection, call_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every leg of a call; the caller has checked that the call is the user's."""
    return await conn.fetch(CALL_LEGS, call_id)
