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
