"""Rows for a bench run, made by PostgreSQL itself (generate_series): a million in seconds.

Webhook scenarios get a number, calls and messages with the SIDs the load will post (fresh ones
for each round); list scenarios get a big user (BENCH_ROWS calls; BENCH_ROWS messages over 10,000
contacts, one of them with a tenth) and a small one (10,000 of each), among other users' rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from commpro.calls.store import STATUS_RANK as CALL_RANK
from commpro.messages.store import STATUS_RANK as MESSAGE_RANK
from commpro.numbers.store import insert_number

USER = "bench-user"
CALLER = "+14155550100"
BIG, SMALL = "bench-big", "bench-small"
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
SMALL_ROWS = 10_000
OTHER_USERS, OTHER_ROWS = 10, int(os.environ.get("BENCH_OTHER_ROWS", "20000"))
# Calls: one every 30 s back from now for the big user (a year), spread over the same year for the
# small one, so that a day or 92 days hold the same share of each.
SPAN_S = 365 * 86400

# One slice of SIDs: `$3 || md5($4 || g)`, so that each slice's SIDs differ (the salt) and the
# SQL ceiling's match what pgbench computes (prefix and salt 'CAc').
SEED_CALLS = """
INSERT INTO calls (user_id, phone_number_id, sid, direction, from_number, to_number, status, status_rank)
SELECT $1, $2, $3 || md5($4 || g::text), 'outbound', $5, $6, 'initiated', $7
FROM generate_series(1, $8) g
RETURNING sid
"""
PEER_CALLS = "INSERT INTO peer_calls (sid, status, status_rank) SELECT unnest($1::text[]), 'initiated', 0"
PEER_ONLY_CALLS = """
INSERT INTO peer_calls (sid, status, status_rank) SELECT 'CA' || md5($1 || g::text), 'initiated', 0
FROM generate_series(1, $2) g
RETURNING sid
"""
SEED_CONTACT = """
INSERT INTO contacts (user_id, phone_number) VALUES ($1, $2)
ON CONFLICT (user_id, phone_number) DO UPDATE SET updated_at = contacts.updated_at RETURNING id
"""
SEED_MESSAGES = """
INSERT INTO messages (user_id, contact_id, phone_number_id, sid, direction, from_number, to_number, status,
                      status_rank)
SELECT $1, $2, $3, 'SM' || md5($4 || g::text), 'outbound', $5, $6, 'queued', $7
FROM generate_series(1, $8) g
RETURNING sid
"""


@dataclass(frozen=True)
class Sids:
    """Files of call SIDs and message SIDs (one a line) that no load has posted yet."""

    calls: Path
    messages: Path


@dataclass(frozen=True)
class Fixtures:
    rounds: list[Sids]
    ceiling: Sids
    memory: Sids


async def webhook_fixtures(conn: asyncpg.Connection, peer_schema: str, to_number: str, count: int, rounds: int,
                           memory_count: int, out: Path) -> Fixtures:
    """The number the load calls, and a slice of `count` fresh call SIDs and as many message SIDs
    for each round and for the SQL ceiling, of `memory_count` for the memory phase.

    A load generator cycles its file from the first SID, and a status only moves forward: a
    second load over the same SIDs would find every call already there and change nothing. The
    reference stack's table holds the same call SIDs (the rounds' and the ceiling's)."""
    number = await insert_number(conn, USER, to_number, identity=USER)
    contact = await conn.fetchval(SEED_CONTACT, USER, CALLER)
    await conn.execute(peer_schema)

    async def one(name: str, prefix: str, salt: str, peer: bool, n: int = count) -> Sids:
        calls = [r["sid"] for r in await conn.fetch(SEED_CALLS, USER, number["id"], prefix, salt, to_number, CALLER,
                                                    CALL_RANK["initiated"], n)]
        if peer:
            await conn.execute(PEER_CALLS, calls)
        messages = [r["sid"] for r in await conn.fetch(SEED_MESSAGES, USER, contact, number["id"], salt, to_number,
                                                       CALLER, MESSAGE_RANK["queued"], n)]
        sids = Sids(out / f"{name}-calls.txt", out / f"{name}-messages.txt")
        sids.calls.write_text("\n".join(calls) + "\n")
        sids.messages.write_text("\n".join(messages) + "\n")
        return sids

    return Fixtures(rounds=[await one(f"round{r}", "CA", f"round{r}:", True) for r in range(rounds)],
                    ceiling=await one("ceiling", "CAc", "CAc", True),
                    memory=await one("memory", "CA", "memory:", False, memory_count))


async def peer_fixtures(conn: asyncpg.Connection, peer_schema: str, count: int, rounds: int, out: Path) -> list[Path]:
    """The reference stack's table alone, in a database of its own, with a file of `count` call
    SIDs for each round."""
    await conn.execute(peer_schema)
    files = []
    for r in range(rounds):
        sids = [row["sid"] for row in await conn.fetch(PEER_ONLY_CALLS, f"peer{r}:", count)]
        files.append(out / f"peer-round{r}-calls.txt")
        files[-1].write_text("\n".join(sids) + "\n")
    return files


def split_sids(path: Path, parts: int) -> list[Path]:
    """`path`'s SIDs in `parts` files of consecutive slices (name-1.txt...), for loads that each
    need SIDs of their own."""
    sids = path.read_text().split()
    size = -(-len(sids) // parts)
    out = []
    for k in range(parts):
        part = path.with_name(f"{path.stem}-{k + 1}.txt")
        part.write_text("\n".join(sids[k * size:(k + 1) * size]) + "\n")
        out.append(part)
    return out


LIST_CALLS_ROWS = """
INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank, created_at)
SELECT $1, NULL, CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END, '+14155550100', '+33123456789',
       (ARRAY['completed', 'completed', 'completed', 'no-answer', 'busy'])[1 + g % 5], 3,
       now() - make_interval(secs => g * $3::float8 / $2)
FROM generate_series(1, $2) g
"""
LIST_CONTACTS = """
INSERT INTO contacts (user_id, phone_number)
SELECT $1, '+1415' || lpad(g::text, 7, '0') FROM generate_series(1, $2) g
"""
# A tenth of the messages with the first contact, the rest over the others; a minute apart.
LIST_MESSAGES_ROWS = """
WITH c AS (SELECT id, row_number() OVER (ORDER BY phone_number) AS n FROM contacts WHERE user_id = $1)
INSERT INTO messages (user_id, contact_id, direction, from_number, to_number, status, status_rank, created_at)
SELECT $1, c.id, 'inbound', '+14155550100', '+33123456789', 'received', 3, now() - make_interval(mins => g)
FROM generate_series(1, $2) g
JOIN c ON c.n = CASE WHEN g % 10 = 0 THEN 1 ELSE 2 + g % ($3 - 1) END
"""
LIST_CONVERSATIONS_ROWS = """
INSERT INTO conversations (contact_id, user_id, last_message_id, last_message_at)
SELECT DISTINCT ON (contact_id) contact_id, user_id, id, created_at FROM messages
WHERE user_id = $1 ORDER BY contact_id, created_at DESC, id DESC
"""


# Indexes that are not constraints: dropped while the rows go in, built again after (one sort
# each, instead of a million insertions into each).
SECONDARY_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = 'public' AND tablename = ANY($1::text[])
  AND indexname NOT IN (SELECT conname FROM pg_constraint)
"""


@asynccontextmanager
async def secondary_indexes_dropped(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Seed inside this: the secondary indexes of calls, messages and conversations are built
    again after, then every table is vacuumed and analysed."""
    indexes = await conn.fetch(SECONDARY_INDEXES, ["calls", "messages", "conversations"])
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    yield
    async with conn.transaction():
        await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for index in indexes:
            await conn.execute(index["indexdef"])
    await settle(conn)


async def settle(conn: asyncpg.Connection) -> None:
    """Statistics and the visibility map, as autovacuum would leave them on tables this size,
    and the dirty pages written out: done now rather than by autovacuum and the checkpointer
    during the next phase's measurements. peer_calls is the reference stack's."""
    for table in ("calls", "contacts", "messages", "conversations", "events", "jobs", "peer_calls"):
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            await conn.execute(f"VACUUM ANALYZE {table}")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")


async def list_rows(conn: asyncpg.Connection) -> None:
    """Calls, contacts, messages and conversations for the big and small users, and others' calls
    (inside secondary_indexes_dropped)."""
    for user, rows, contacts in ((BIG, ROWS, 10_000), (SMALL, SMALL_ROWS, 100)):
        await conn.execute(LIST_CALLS_ROWS, user, rows, SPAN_S)
        await conn.execute(LIST_CONTACTS, user, contacts)
        await conn.execute(LIST_MESSAGES_ROWS, user, rows, contacts)
        await conn.execute(LIST_CONVERSATIONS_ROWS, user)
    for i in range(OTHER_USERS):
        await conn.execute(LIST_CALLS_ROWS, f"bench-other-{i}", OTHER_ROWS, SPAN_S)
