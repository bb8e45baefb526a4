"""SQL for a message's media: the rows a send adds (an inbound MMS's come with its batch,
sql/0013), what the API reads, and the fetch job's (commpro.messages.media) states, pending to
fetched or given up."""

from __future__ import annotations

import uuid

import asyncpg

INSERT_MEDIA = """
INSERT INTO message_media (id, message_id, user_id, content_type, size_bytes, ciphertext, nonce, is_link, position)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


async def insert_media(conn: asyncpg.Connection, media_id: uuid.UUID, message_id: uuid.UUID, user_id: str,
                       content_type: str | None, size: int | None, sealed: tuple[bytes, bytes],
                       is_link: bool, position: int) -> None:
    await conn.execute(INSERT_MEDIA, media_id, message_id, user_id, content_type, size, sealed[0], sealed[1],
                       is_link, position)


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


PENDING_MEDIA = """
SELECT id, message_id, user_id, source_url, content_type FROM message_media WHERE id = $1 AND fetch_state = 'pending'
"""


async def get_pending_media(conn: asyncpg.Connection, media_id: uuid.UUID) -> asyncpg.Record | None:
    """What the media fetch job downloads; None once there is nothing to fetch."""
    return await conn.fetchrow(PENDING_MEDIA, media_id)


STORE_FETCHED = """
UPDATE message_media SET ciphertext = $2, nonce = $3, size_bytes = $4, content_type = $5,
       fetch_state = 'done', fetch_error = NULL, source_url = NULL, next_fetch_at = NULL
WHERE id = $1
"""


async def store_fetched_media(conn: asyncpg.Connection, media_id: uuid.UUID, sealed: tuple[bytes, bytes],
                              size: int, content_type: str) -> None:
    await conn.execute(STORE_FETCHED, media_id, sealed[0], sealed[1], size, content_type)


MEDIA_FETCH_FAILED = """
UPDATE message_media SET fetch_attempts = fetch_attempts + 1, fetch_error = $2,
       fetch_state = CASE WHEN $3 THEN 'failed' ELSE fetch_state END
WHERE id = $1 AND fetch_state = 'pending'
"""


async def media_fetch_failed(conn: asyncpg.Connection, media_id: uuid.UUID, error: str, final: bool) -> None:
    """Record a failed download; `final`: it will not be tried again."""
    await conn.execute(MEDIA_FETCH_FAILED, media_id, error, final)


MEDIA_GAVE_UP = """
UPDATE message_media SET fetch_state = 'failed' WHERE id = $1 AND fetch_state = 'pending' RETURNING message_id
"""


async def media_gave_up(conn: asyncpg.Connection, media_id: uuid.UUID) -> uuid.UUID | None:
    """The media's message, when this gave it up."""
    return await conn.fetchval(MEDIA_GAVE_UP, media_id)
