"""The sandbox's memory in PostgreSQL: the calls, messages, media and recordings it has made.

It lives in the service's database but in a schema of its own, `sandbox`, which the sandbox
creates and evolves itself (SCHEMA_STEPS, its version in `sandbox.meta`): the product's sql/
migrations know nothing of it. So a restarted `make run` still serves the recordings, prices,
summaries and media of earlier calls and messages, and several processes on one database share
one sandbox. Rows belong to an account, as at Twilio: another account's SIDs are not found.
Each change a lifecycle makes is one statement; `DROP SCHEMA sandbox CASCADE` forgets it all.
"""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from commpro.sandbox.records import SandboxCall, SandboxMedia, SandboxMessage, SandboxRecording

# Any constant of the sandbox's own: it only has to differ from the product's lock ids.
SCHEMA_LOCK_ID = 0x53616E64626F78  # "Sandbox"

# Step n brings the schema from version n-1 to n. Append a step to evolve it; never edit one.
SCHEMA_STEPS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS sandbox.calls (
        sid text PRIMARY KEY,
        account_sid text NOT NULL,
        from_number text NOT NULL,
        to_number text NOT NULL,
        direction text NOT NULL,
        status text NOT NULL,
        parent_sid text,
        url text,
        twiml text,
        status_callback text,
        status_events text[] NOT NULL,
        created timestamptz NOT NULL,
        updated timestamptz NOT NULL,
        start_at timestamptz,
        end_at timestamptz,
        duration integer,
        sequence integer NOT NULL,
        error_code integer,
        price_at timestamptz
    );
    CREATE INDEX IF NOT EXISTS calls_parent_sid ON sandbox.calls (parent_sid) WHERE parent_sid IS NOT NULL;
    CREATE INDEX IF NOT EXISTS calls_from_number ON sandbox.calls (from_number);
    CREATE INDEX IF NOT EXISTS calls_unpriced ON sandbox.calls (price_at) WHERE price_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS sandbox.messages (
        sid text PRIMARY KEY,
        account_sid text NOT NULL,
        from_number text NOT NULL,
        to_number text NOT NULL,
        body text NOT NULL,
        direction text NOT NULL,
        status text NOT NULL,
        status_callback text,
        media_urls text[] NOT NULL,
        created timestamptz NOT NULL,
        updated timestamptz NOT NULL,
        sent timestamptz,
        error_code integer,
        error_message text,
        price_at timestamptz,
        num_segments integer NOT NULL,
        redacted boolean NOT NULL
    );
    CREATE INDEX IF NOT EXISTS messages_from_number ON sandbox.messages (from_number);
    CREATE INDEX IF NOT EXISTS messages_unpriced ON sandbox.messages (price_at) WHERE price_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS sandbox.media (
        sid text PRIMARY KEY,
        message_sid text NOT NULL,
        account_sid text NOT NULL,
        content_type text NOT NULL,
        data bytea NOT NULL,
        created timestamptz NOT NULL,
        position integer NOT NULL
    );
    CREATE INDEX IF NOT EXISTS media_message_sid ON sandbox.media (message_sid, position);
    CREATE TABLE IF NOT EXISTS sandbox.recordings (
        sid text PRIMARY KEY,
        call_sid text NOT NULL,
        account_sid text NOT NULL,
        duration integer NOT NULL,
        created timestamptz NOT NULL,
        channels integer NOT NULL,
        source text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS recordings_call_sid ON sandbox.recordings (call_sid);
    """,
)
SCHEMA_VERSION = len(SCHEMA_STEPS)

SELECT_VERSION = "SELECT version FROM sandbox.meta"
CREATE_META = """
CREATE SCHEMA IF NOT EXISTS sandbox;
CREATE TABLE IF NOT EXISTS sandbox.meta (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
);
"""
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock($1)"
SET_VERSION = """
INSERT INTO sandbox.meta (one, version) VALUES (true, $1)
ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version
"""


async def ensure_schema(conn: asyncpg.Connection) -> int:
    """Create or bring the sandbox's schema up to SCHEMA_VERSION; returns the version found.
    One query when it is up to date; otherwise the steps run under an advisory lock, in one
    transaction, so processes starting at once on one database apply each step once."""
    try:
        found = await conn.fetchval(SELECT_VERSION)
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        found = None
    if found is not None and found >= SCHEMA_VERSION:
        return found
    async with conn.transaction():
        await conn.execute(LOCK_SCHEMA, SCHEMA_LOCK_ID)
        await conn.execute(CREATE_META)
        current = await conn.fetchval(SELECT_VERSION) or 0
        for step in SCHEMA_STEPS[current:]:
            await conn.execute(step)
        if current < SCHEMA_VERSION:
            await conn.execute(SET_VERSION, SCHEMA_VERSION)
    return found or 0


# -- calls -------------------------------------------------------------------------------------

CALL_COLUMNS = """sid, account_sid, from_number, to_number, direction, status, parent_sid, url, twiml,
    status_callback, status_events, created, updated, start_at, end_at, duration, sequence, error_code,
    price_at"""


def _call_args(call: SandboxCall) -> tuple:
    return (call.sid, call.account_sid, call.from_, call.to, call.direction, call.status, call.parent_sid,
            call.url, call.twiml, call.status_callback, sorted(call.status_events), call.created, call.updated,
            call.start, call.end, call.duration, call.sequence, call.error_code, call.price_at)


def _call(row: asyncpg.Record) -> SandboxCall:
    return SandboxCall(
        row["sid"], row["account_sid"], row["from_number"], row["to_number"], row["direction"],
        status=row["status"], parent_sid=row["parent_sid"], url=row["url"], twiml=row["twiml"],
        status_callback=row["status_callback"], status_events=frozenset(row["status_events"]),
        created=row["created"], updated=row["updated"], start=row["start_at"], end=row["end_at"],
        duration=row["duration"], sequence=row["sequence"], error_code=row["error_code"],
        price_at=row["price_at"],
    )


# The whole row, inserted or overwritten: only the process playing a call writes it.
SAVE_CALL = f"""
INSERT INTO sandbox.calls ({CALL_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (sid) DO UPDATE SET
    status = EXCLUDED.status, status_callback = EXCLUDED.status_callback,
    status_events = EXCLUDED.status_events, updated = EXCLUDED.updated, start_at = EXCLUDED.start_at,
    end_at = EXCLUDED.end_at, duration = EXCLUDED.duration, sequence = EXCLUDED.sequence,
    error_code = EXCLUDED.error_code, price_at = EXCLUDED.price_at
"""


async def save_call(pool: asyncpg.Pool, call: SandboxCall) -> None:
    await pool.execute(SAVE_CALL, *_call_args(call))


SELECT_CALL = f"SELECT {CALL_COLUMNS} FROM sandbox.calls WHERE sid = $1 AND account_sid = $2"


async def get_call(pool: asyncpg.Pool, sid: str, account_sid: str) -> SandboxCall | None:
    row = await pool.fetchrow(SELECT_CALL, sid, account_sid)
    return _call(row) if row else None


SELECT_CALLS_FROM = f"SELECT {CALL_COLUMNS} FROM sandbox.calls WHERE from_number = $1 ORDER BY created, sid"


async def calls_from(pool: asyncpg.Pool, number: str) -> list[SandboxCall]:
    return [_call(row) for row in await pool.fetch(SELECT_CALLS_FROM, number)]


SELECT_CHILD_CALLS = f"SELECT {CALL_COLUMNS} FROM sandbox.calls WHERE parent_sid = $1 ORDER BY created, sid"


async def child_calls(pool: asyncpg.Pool, parent_sid: str) -> list[SandboxCall]:
    return [_call(row) for row in await pool.fetch(SELECT_CHILD_CALLS, parent_sid)]


# -- messages and media ------------------------------------------------------------------------

MESSAGE_COLUMNS = """sid, account_sid, from_number, to_number, body, direction, status, status_callback,
    media_urls, created, updated, sent, error_code, error_message, price_at, num_segments, redacted"""


def _message(row: asyncpg.Record, media: list[SandboxMedia]) -> SandboxMessage:
    return SandboxMessage(
        row["sid"], row["account_sid"], row["from_number"], row["to_number"], row["body"], row["direction"],
        status=row["status"], status_callback=row["status_callback"], media_urls=tuple(row["media_urls"]),
        media=media, created=row["created"], updated=row["updated"], sent=row["sent"],
        error_code=row["error_code"], error_message=row["error_message"], price_at=row["price_at"],
        num_segments=row["num_segments"], redacted=row["redacted"],
    )


INSERT_MESSAGE = f"""
INSERT INTO sandbox.messages ({MESSAGE_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (sid) DO NOTHING
"""
INSERT_MEDIA = """
INSERT INTO sandbox.media (sid, message_sid, account_sid, content_type, data, created, position)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (sid) DO NOTHING
"""


def _media_args(media: SandboxMedia, position: int) -> tuple:
    return (media.sid, media.message_sid, media.account_sid, media.content_type, media.data, media.created,
            position)


async def insert_message(pool: asyncpg.Pool, message: SandboxMessage) -> None:
    """The message and the media it holds (an inbound MMS), in one transaction."""
    args = (message.sid, message.account_sid, message.from_, message.to, message.body, message.direction,
            message.status, message.status_callback, list(message.media_urls), message.created, message.updated,
            message.sent, message.error_code, message.error_message, message.price_at, message.num_segments,
            message.redacted)
    if not message.media:
        await pool.execute(INSERT_MESSAGE, *args)
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(INSERT_MESSAGE, *args)
        await conn.executemany(INSERT_MEDIA, [_media_args(m, i) for i, m in enumerate(message.media)])


async def insert_media(pool: asyncpg.Pool, media: SandboxMedia) -> None:
    await pool.execute(INSERT_MEDIA, *_media_args(media, 0))


# What the lifecycle (and a test that plays Twilio) changes of a message; never its body, so a
# redaction made meanwhile by another process stays.
UPDATE_MESSAGE = """
UPDATE sandbox.messages
SET status = $2, updated = $3, sent = $4, error_code = $5, error_message = $6, price_at = $7
WHERE sid = $1
"""


async def save_message_status(pool: asyncpg.Pool, message: SandboxMessage) -> None:
    await pool.execute(UPDATE_MESSAGE, message.sid, message.status, message.updated, message.sent,
                       message.error_code, message.error_message, message.price_at)


# Messages with their media's descriptions (not their bytes: `data` is empty), in one query.
SELECT_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS},
       (SELECT json_agg(json_build_object('sid', md.sid, 'content_type', md.content_type,
                                          'created', md.created) ORDER BY md.position, md.sid)::text
        FROM sandbox.media md WHERE md.message_sid = m.sid) AS media
FROM sandbox.messages m
"""
SELECT_MESSAGE = SELECT_MESSAGES + "WHERE sid = $1 AND account_sid = $2"


def _with_media(row: asyncpg.Record) -> SandboxMessage:
    media = [SandboxMedia(item["sid"], row["sid"], row["account_sid"], item["content_type"], b"",
                          datetime.fromisoformat(item["created"]))
             for item in json.loads(row["media"] or "[]")]
    return _message(row, media)


async def get_message(pool: asyncpg.Pool, sid: str, account_sid: str) -> SandboxMessage | None:
    row = await pool.fetchrow(SELECT_MESSAGE, sid, account_sid)
    return _with_media(row) if row else None


SELECT_MESSAGES_FROM = SELECT_MESSAGES + "WHERE from_number = $1 ORDER BY created, sid"


async def messages_from(pool: asyncpg.Pool, number: str) -> list[SandboxMessage]:
    return [_with_media(row) for row in await pool.fetch(SELECT_MESSAGES_FROM, number)]


REDACT_MESSAGE = """
UPDATE sandbox.messages SET body = '', redacted = true, updated = $3
WHERE sid = $1 AND account_sid = $2
RETURNING sid
"""


async def redact_message(pool: asyncpg.Pool, sid: str, account_sid: str, at: datetime) -> bool:
    return await pool.fetchval(REDACT_MESSAGE, sid, account_sid, at) is not None


SELECT_MEDIA = """
SELECT sid, message_sid, account_sid, content_type, data, created FROM sandbox.media WHERE sid = $1 AND account_sid = $2
"""


async def get_media(pool: asyncpg.Pool, sid: str, account_sid: str) -> SandboxMedia | None:
    row = await pool.fetchrow(SELECT_MEDIA, sid, account_sid)
    if row is None:
        return None
    return SandboxMedia(row["sid"], row["message_sid"], row["account_sid"], row["content_type"], row["data"],
                        row["created"])


DELETE_MEDIA = "DELETE FROM sandbox.media WHERE sid = $1 AND message_sid = $2 AND account_sid = $3 RETURNING sid"


async def delete_media(pool: asyncpg.Pool, sid: str, message_sid: str, account_sid: str) -> bool:
    return await pool.fetchval(DELETE_MEDIA, sid, message_sid, account_sid) is not None


# -- recordings --------------------------------------------------------------------------------

INSERT_RECORDING = """
INSERT INTO sandbox.recordings (sid, call_sid, account_sid, duration, created, channels, source)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (sid) DO NOTHING
"""


async def insert_recording(pool: asyncpg.Pool, rec: SandboxRecording) -> None:
    await pool.execute(INSERT_RECORDING, rec.sid, rec.call_sid, rec.account_sid, rec.duration, rec.created,
                       rec.channels, rec.source)


RECORDING_COLUMNS = "sid, call_sid, account_sid, duration, created, channels, source"


def _recording(row: asyncpg.Record) -> SandboxRecording:
    return SandboxRecording(row["sid"], row["call_sid"], row["account_sid"], row["duration"], row["created"],
                            channels=row["channels"], source=row["source"])


SELECT_RECORDING = f"SELECT {RECORDING_COLUMNS} FROM sandbox.recordings WHERE sid = $1 AND account_sid = $2"


async def get_recording(pool: asyncpg.Pool, sid: str, account_sid: str) -> SandboxRecording | None:
    row = await pool.fetchrow(SELECT_RECORDING, sid, account_sid)
    return _recording(row) if row else None


SELECT_RECORDINGS_OF = f"SELECT {RECORDING_COLUMNS} FROM sandbox.recordings WHERE call_sid = $1 ORDER BY created, sid"


async def recordings_of(pool: asyncpg.Pool, call_sid: str) -> list[SandboxRecording]:
    return [_recording(row) for row in await pool.fetch(SELECT_RECORDINGS_OF, call_sid)]


DELETE_RECORDING = "DELETE FROM sandbox.recordings WHERE sid = $1 AND account_sid = $2 RETURNING sid"


async def delete_recording(pool: asyncpg.Pool, sid: str, account_sid: str) -> bool:
    return await pool.fetchval(DELETE_RECORDING, sid, account_sid) is not None


# -- controls ----------------------------------------------------------------------------------

# {"pricesNow": true}: every ended call and final message of the account is priced now.
PRICE_CALLS_NOW = """
UPDATE sandbox.calls SET price_at = $2 WHERE account_sid = $1 AND price_at > $2
"""
PRICE_MESSAGES_NOW = """
UPDATE sandbox.messages SET price_at = $2 WHERE account_sid = $1 AND price_at > $2
"""


# {"forget": true}: the account's records are gone, as in a fresh sandbox.
FORGET_CALLS = "DELETE FROM sandbox.calls WHERE account_sid = $1"
FORGET_MESSAGES = "DELETE FROM sandbox.messages WHERE account_sid = $1"
FORGET_MEDIA = "DELETE FROM sandbox.media WHERE account_sid = $1"
FORGET_RECORDINGS = "DELETE FROM sandbox.recordings WHERE account_sid = $1"


async def forget(pool: asyncpg.Pool, account_sid: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for statement in (FORGET_CALLS, FORGET_MESSAGES, FORGET_MEDIA, FORGET_RECORDINGS):
            await conn.execute(statement, account_sid)


async def price_now(pool: asyncpg.Pool, account_sid: str, at: datetime) -> None:
    async with pool.acquire() as conn:
        await conn.execute(PRICE_CALLS_NOW, account_sid, at)
        await conn.execute(PRICE_MESSAGES_NOW, account_sid, at)
