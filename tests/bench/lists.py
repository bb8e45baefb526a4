"""S4 and S5: list requests at a million rows against ten thousand, sequential, through the API.

Each request shape is sent BENCH_LIST_REQUESTS times in a row by one client (so the server's
pooled connections run each statement well past the five executions after which PostgreSQL may
keep a generic plan); p50 and p95 for the big and the small user, and their ratio. The SQL
ceiling of each is the same list function run directly through asyncpg, as many times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from commpro.calls import store as calls
from commpro.calls.routes import MAX_OFFSET
from commpro.messages import store as messages
from commpro.validation import encode_cursor
from tests.bench.seed import BIG, SMALL

REQUESTS = int(os.environ.get("BENCH_LIST_REQUESTS", "200"))

CALL_AT = "SELECT created_at, id FROM calls WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1"
CALL_COUNT = "SELECT count(*) FROM calls WHERE user_id = $1"
BIGGEST_CONTACT = """
SELECT contact_id, count(*) AS n FROM messages WHERE user_id = $1 GROUP BY contact_id ORDER BY n DESC LIMIT 1
"""
MESSAGE_AT = """
SELECT created_at, id FROM messages WHERE user_id = $1 AND contact_id = $2
ORDER BY created_at DESC, id DESC OFFSET $3 LIMIT 1
"""
CONVERSATION_AT = """
SELECT last_message_at, contact_id FROM conversations WHERE user_id = $1
ORDER BY last_message_at DESC, contact_id DESC OFFSET $2 LIMIT 1
"""
CONVERSATION_COUNT = "SELECT count(*) FROM conversations WHERE user_id = $1"


async def shapes(conn: asyncpg.Connection, user: str) -> dict[str, tuple[str, dict, Callable]]:
    """name -> (path, query, the store call it makes) for `user`."""
    now = datetime.now(UTC)
    total = await conn.fetchval(CALL_COUNT, user)
    half = await conn.fetchrow(CALL_AT, user, total // 2)
    contact = await conn.fetchrow(BIGGEST_CONTACT, user)
    mid = await conn.fetchrow(MESSAGE_AT, user, contact["contact_id"], contact["n"] // 2)
    conversations = await conn.fetchval(CONVERSATION_COUNT, user)
    deep = await conn.fetchrow(CONVERSATION_AT, user, conversations // 2)
    # Three days: the 10k user has about 27 calls a day, and a page of 27 renders faster than
    # the 1M user's page of 50 whatever the table's size. Both pages full: like for like.
    day = now - timedelta(days=300)
    quarter = now - timedelta(days=200)
    thread = f"/api/messages/conversations/{contact['contact_id']}"

    def list_calls(**kw):
        args = {"direction": None, "status": None, "since": None, "until": None, "before": None, "offset": 0} | kw
        return lambda c: calls.list_calls(c, user, limit=50, **args)

    return {
        "calls, first page": ("/api/calls", {}, list_calls()),
        "calls, cursor at half": ("/api/calls", {"cursor": encode_cursor(*half)}, list_calls(before=tuple(half))),
        "calls, three days 10 months ago": ("/api/calls", {"since": day.isoformat(), "until": (day + timedelta(days=3))
                                            .isoformat()}, list_calls(since=day, until=day + timedelta(days=3))),
        "calls, 92 days": ("/api/calls", {"since": quarter.isoformat(), "until": (quarter + timedelta(days=92))
                           .isoformat()}, list_calls(since=quarter, until=quarter + timedelta(days=92))),
        "calls, inbound completed, cursor at half": (
            "/api/calls", {"direction": "inbound", "status": "completed", "cursor": encode_cursor(*half)},
            list_calls(direction="inbound", status="completed", before=tuple(half))),
        f"calls, offset={MAX_OFFSET - 50:,} (the cap)": ("/api/calls", {"offset": str(MAX_OFFSET - 50)},
                                                         list_calls(offset=MAX_OFFSET - 50)),
        "thread, first page": (thread, {}, lambda c: messages.list_messages(c, user, contact["contact_id"], None, 50)),
        "thread, before at half": (thread, {"before": encode_cursor(*mid)},
                                   lambda c: messages.list_messages(c, user, contact["contact_id"], tuple(mid), 50)),
        "conversations, first page": ("/api/messages/conversations", {},
                                      lambda c: messages.list_conversations(c, user, None, 50)),
        "conversations, cursor at half": ("/api/messages/conversations", {"cursor": encode_cursor(*deep)},
                                          lambda c: messages.list_conversations(c, user, tuple(deep), 50)),
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.95))]


async def timed(n: int, call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return percentiles(out)


async def measure(base: str, database_url: str, tokens: dict[str, str]) -> list[dict]:
    """One row per request shape: p50/p95 at 10k and at 1M through the API, ratio, SQL p50 each."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            by_user = {user: await shapes(conn, user) for user in (SMALL, BIG)}
        rows = []
        async with aiohttp.ClientSession() as session:
            for name in by_user[BIG]:
                row = {"request": name}
                for user, label in ((SMALL, "small"), (BIG, "big")):
                    path, query, store_call = by_user[user][name]
                    headers = {"Authorization": f"Bearer {tokens[user]}"}

                    items = []

                    async def api(path=path, query=query, headers=headers, items=items) -> None:
                        async with session.get(base + path, params=query, headers=headers) as resp:
                            if resp.status != 200:
                                raise SystemExit(f"{path} {query}: {resp.status} {await resp.text()}")
                            if items:  # counted once, outside the other timings
                                await resp.read()
                            else:
                                body = await resp.json()
                                items.append(len(next(v for v in body.values() if isinstance(v, list))))

                    async def sql(store_call=store_call) -> None:
                        async with pool.acquire() as conn:
                            await store_call(conn)

                    row[f"{label}_p50"], row[f"{label}_p95"] = await timed(REQUESTS, api)
                    row[f"{label}_items"] = items[0]  # the page's size: compare like with like
                    row[f"{label}_sql_p50"], _ = await timed(REQUESTS, sql)
                row["ratio_p50"] = row["big_p50"] / row["small_p50"]
                rows.append(row)
        return rows
    finally:
        await pool.close()
