"""SQL for voicemail transcripts. Store functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid

import asyncpg

# A voicemail recorded with transcription asked for: its transcript is awaited (unless it came first).
TRANSCRIPT_PENDING = """
UPDATE calls SET transcript_status = 'pending', updated_at = now()
WHERE id = $1 AND transcript_status IS NULL
"""


async def transcript_pending(conn: asyncpg.Connection, call_id: uuid.UUID) -> None:
    await conn.execute(TRANSCRIPT_PENDING, call_id)


# Once: Twilio retries its callback, and a completed transcript never goes back to failed.
SET_TRANSCRIPT = """
UPDATE calls SET transcript_status = $2, transcript_ciphertext = $3, transcript_nonce = $4,
       transcript_at = now(), transcription_sid = $5, updated_at = now()
WHERE id = $1 AND transcript_status IS DISTINCT FROM 'completed'
  AND (transcription_sid IS NULL OR transcription_sid = $5 OR $2 = 'completed')
"""


async def set_transcript(conn: asyncpg.Connection, call_id: uuid.UUID, status: str, sealed: tuple[bytes, bytes] | None,
                         transcription_sid: str) -> bool:
    """Store the transcript (sealed) or its failure; True when this changed the call."""
    ciphertext, nonce = sealed or (None, None)
    return await conn.execute(SET_TRANSCRIPT, call_id, status, ciphertext, nonce, transcription_sid) == "UPDATE 1"


# A call recording (<Dial record>) as its status callback reports it. Retries and late callbacks
# are harmless: the same SID again changes nothing once deleted, and a voicemail is never replaced.
SET_CALL_RECORDING = """
UPDATE calls SET recording_sid = $2, recording_url = CASE WHEN $5 = 'completed' THEN $3 END,
       recording_duration_s = $4, recording_status = $5, updated_at = now()
WHERE id = $1 AND recording_deleted_at IS NULL AND NOT voicemail
  AND (recording_sid IS NULL OR recording_sid = $2)
  AND recording_status IS DISTINCT FROM 'completed'
"""


async def set_call_recording(conn: asyncpg.Connection, call_id: uuid.UUID, sid: str, url: str | None,
                             duration_s: int | None, status: str) -> bool:
    return await conn.execute(SET_CALL_RECORDING, call_id, sid, url, duration_s, status) == "UPDATE 1"


OWN_RECORDING = """
SELECT recording_sid FROM calls
WHERE user_id = $1 AND id = $2 AND recording_url IS NOT NULL AND recording_deleted_at IS NULL
"""


async def own_recording(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID) -> str | None:
    """The SID of the user's recording of this call, None when there is none (or not theirs)."""
    return await conn.fetchval(OWN_RECORDING, user_id, call_id)


DELETE_RECORDING = """
UPDATE calls SET recording_url = NULL, recording_deleted_at = now(), updated_at = now()
WHERE user_id = $1 AND id = $2 AND recording_sid = $3 AND recording_deleted_at IS NULL
"""


async def delete_recording(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID, sid: str) -> bool:
    return await conn.execute(DELETE_RECORDING, user_id, call_id, sid) == "UPDATE 1"
