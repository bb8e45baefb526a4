"""Lists at any depth: every combination of filters gives the right rows newest first, whatever
plan PostgreSQL caches; OFFSET is capped and points to the cursor; pooled connections are handed
on without a reset round trip, yet never inside a transaction."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from commpro.calls import store
from commpro.calls.routes import MAX_OFFSET
from commpro.db import create_pool
from commpro.messages import store as messages
from commpro.validation import encode_cursor
from tests.conftest import new_user

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# (direction, status, days after T0): two calls share a timestamp, so the id breaks the tie.
ROWS = [("inbound", "completed", 0), ("outbound", "completed", 1), ("inbound", "busy", 2),
        ("outbound", "failed", 3), ("inbound", "completed", 3), ("outbound", "completed", 5),
        ("inbound", "no-answer", 8), ("outbound", "completed", 13), ("inbound", "completed", 21)]
SEED = """
INSERT INTO calls (user_id, direction, from_number, to_number, status, status_rank, created_at)
SELECT $1, d, '+15005550006', '+447911123456', s, 3, $2::timestamptz + make_interval(days => n)
FROM unnest($3::text[], $4::text[], $5::int[]) AS r(d, s, n)
RETURNING id, direction, status, created_at
"""


async def seed(service, user: str) -> list[dict]:
    """ROWS for `user`, newest first as the API sorts them."""
    d, s, n = zip(*ROWS, strict=True)
    async with service.pool.acquire() as conn:
        rows = await conn.fetch(SEED, user, T0, list(d), list(s), list(n))
    return sorted((dict(r) for r in rows), key=lambda r: (r["created_at"], r["id"]), reverse=True)


async def get_list(service, user: str, **query) -> tuple[int, dict]:
    resp = await service.client.get("/api/calls", params={k: str(v) for k, v in query.items()},
                                    headers=service.auth(user))
    return resp.status, await resp.json()


def cursor_of(row: dict) -> str:
    return encode_cursor(row["created_at"], row["id"])


async def test_every_filter_combination_gives_the_right_rows_in_order(service):
    user, other = new_user(), new_user()
    rows = await seed(service, user)
    await seed(service, other)  # the same calls for someone else: never listed
    cursor_row = rows[3]  # shares its timestamp with rows[4]: the id decides
    options = {
        "direction": ["inbound"], "status": ["completed"],
        "since": [(T0 + timedelta(days=1)).isoformat()], "until": [(T0 + timedelta(days=13)).isoformat()],
        "cursor": [cursor_of(cursor_row)], "offset": [1],
    }
    names = list(options)
    # Twice round every combination, so each statement runs past the point where PostgreSQL
    # may switch it to a generic plan.
    for _ in range(2):
        for present in itertools.chain.from_iterable(itertools.combinations(names, k) for k in range(len(names) + 1)):
            if "cursor" in present and "offset" in present:
                continue
            query = {name: options[name][0] for name in present}
            expected = [r for r in rows
                        if query.get("direction", r["direction"]) == r["direction"]
                        and query.get("status", r["status"]) == r["status"]
                        and ("since" not in query or r["created_at"] >= T0 + timedelta(days=1))
                        and ("until" not in query or r["created_at"] < T0 + timedelta(days=13))
                        and ("cursor" not in query
                             or (r["created_at"], r["id"]) < (cursor_row["created_at"], cursor_row["id"]))]
            expected = expected[query.get("offset", 0):][:3]
            status, body = await get_list(service, user, limit=3, **query)
            assert status == 200, (query, body)
            assert [c["id"] for c in body["calls"]] == [str(r["id"]) for r in expected], query


LIVE = [("outbound", "initiated", 30), ("inbound", "ringing", 31), ("outbound", "in-progress", 32),
        ("outbound", "unconfirmed", 33)]
# With SIDs: the sweep of unconfirmed calls (tests/test_nothing_twice.py) leaves them alone.
SEED_ANY = """
INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank, created_at)
SELECT $1, 'CA' || md5(random()::text), d, '+15005550006', '+447911123456', s, r,
       $2::timestamptz + make_interval(days => n)
FROM unnest($3::text[], $4::text[], $5::int[], $6::int[]) AS c(d, s, r, n)
RETURNING id, status
"""


async def test_the_status_filter_finds_live_and_ended_calls_and_follows_a_call_that_ends(service):
    """Ended calls are found by list_status (sql/0014), live ones among the user's live calls."""
    user = new_user()
    d, s, n = zip(*ROWS, *LIVE, strict=True)
    ranks = [store.STATUS_RANK.get(status, 0) for status in s]
    async with service.pool.acquire() as conn:
        rows = await conn.fetch(SEED_ANY, user, T0, list(d), list(s), ranks, list(n))
    ids_by_status = {status: {str(r["id"]) for r in rows if r["status"] == status} for status in store.STATUSES}

    async def listed(status: str) -> set[str]:
        code, body = await get_list(service, user, status=status, limit=100)
        assert code == 200, body
        return {c["id"] for c in body["calls"]}

    for status in store.STATUSES:
        assert await listed(status) == ids_by_status[status], status
    ringing = next(iter(ids_by_status["ringing"]))
    async with service.pool.acquire() as conn:
        assert await store.apply_status(conn, uuid.UUID(ringing), "busy", 0, 0, None, answers=False)
    assert await listed("ringing") == set()
    assert await listed("busy") == ids_by_status["busy"] | {ringing}


async def test_a_deep_offset_is_refused_with_the_way_to_page_further(service):
    user = new_user()
    rows = await seed(service, user)
    status, body = await get_list(service, user, offset=MAX_OFFSET + 1)
    assert status == 400
    assert body["error"]["code"] == "validation_failed"
    assert "cursor" in body["error"]["details"]["offset"] and str(MAX_OFFSET) in body["error"]["details"]["offset"]
    status, body = await get_list(service, user, offset=MAX_OFFSET)
    assert (status, body["calls"]) == (200, [])
    status, body = await get_list(service, user, offset=len(rows) - 2, limit=5)
    assert [c["id"] for c in body["calls"]] == [str(r["id"]) for r in rows[-2:]] and body["nextCursor"] is None


async def generic_index_cond(service, query: str, args: list) -> tuple[str, str]:
    """(the plan as text, the first Index Cond) of `query` under the generic plan PostgreSQL may
    cache, with sequential and bitmap scans off so that the tiny test tables still use an index."""
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        await conn.execute("PREPARE deep_page AS " + query)
        # EXECUTE takes no bound parameters: these literals are the test's own values.
        literals = ", ".join(f"'{v}'" for v in args)
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE deep_page({literals})")
        await conn.execute("DEALLOCATE deep_page")
    tree = plan if isinstance(plan, list) else orjson.loads(plan)
    index_cond = next(n["Index Cond"] for n in _nodes(tree[0]["Plan"]) if "Index Cond" in n)
    return orjson.dumps(tree).decode(), index_cond


async def test_generic_plans_keep_the_cursor_in_the_index_scan(service):
    """The plan PostgreSQL may cache for a list statement bounds the index scan by the cursor
    and the dates: the reason deep pages cost what the first page costs."""
    filters, args = store.and_filters(store.LIST_CALLS_FILTERS, {
        "since": T0, "until": T0 + timedelta(days=92), "before": (T0 + timedelta(days=30), uuid.uuid4()),
    }, first=2)
    query = store.LIST_CALLS.format(filters=filters, limit=f"${len(args) + 2}")
    text, index_cond = await generic_index_cond(service, query, [new_user(), *args, 50])
    assert "calls_user_created_idx" in text
    assert "created_at" in index_cond and "$" in index_cond


async def test_a_generic_plan_finds_a_status_by_its_index(service):
    """A status filter is an index bound (calls_user_list_status_idx), not a filter over the
    user's calls, under the generic plan too."""
    filters, args = store.and_filters(store.LIST_CALLS_FILTERS, {"status": ("live", "ringing")}, first=2)
    query = store.LIST_CALLS.format(filters=filters, limit=f"${len(args) + 2}")
    text, index_cond = await generic_index_cond(service, query, [new_user(), *args, 50])
    assert "calls_user_list_status_idx" in text
    assert "list_status" in index_cond and "$2" in index_cond


async def test_a_threads_deep_page_keeps_its_cursor_in_the_index_scan(service):
    args = [new_user(), uuid.uuid4(), 50, T0, uuid.uuid4()]
    text, index_cond = await generic_index_cond(service, messages.LIST_MESSAGES_BEFORE, args)
    assert "messages_conversation_idx" in text
    assert "created_at" in index_cond and "$4" in index_cond


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def test_a_released_connection_gets_no_reset_round_trip(service):
    """Released as is: the backend's last statement is still the one the request ran."""
    marker = f"SELECT 'no reset after me {uuid.uuid4().hex}'"
    # A pool the service's background jobs do not share, made as the service makes its own: no
    # job can take the released connection before it is looked at.
    pool = await create_pool(service.config.database.url, min_size=2, max_size=2)
    try:
        async with pool.acquire() as watcher:
            async with pool.acquire() as conn:
                pid = conn.get_server_pid()
                await conn.fetchval(marker)
            last = await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await pool.close()
    assert last == marker


async def test_a_connection_released_inside_a_transaction_is_rolled_back(service):
    user = new_user()
    async with service.pool.acquire() as conn:
        pid = conn.get_server_pid()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO calls (user_id, direction, from_number, to_number, status) "
                           "VALUES ($1, 'inbound', '+15005550006', '+447911123456', 'ringing')", user)
    async with service.pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", user) == 0
        state = await conn.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
    assert state != "idle in transaction"
