"""Status callbacks rewrite their row in place (PostgreSQL's HOT updates, sql/0014): no index of
calls holds a column a callback before the end changes (but for the dialled leg's first, which
records dial_sid once), and the room a page keeps for updates takes the new versions, so ringing
and in-progress write no index entry. The list's status filter, which used to be one of those
indexes, still finds live and ended calls (tests/test_lists.py)."""

from __future__ import annotations

import uuid
from functools import partial

from commpro.calls.store import STATUS_RANK, apply_status_callbacks
from tests.conftest import new_user

# This transaction's own counts (PostgreSQL's statistics before they are reported).
HOT_UPDATES = "SELECT pg_stat_get_xact_tuples_updated($1::regclass), pg_stat_get_xact_tuples_hot_updated($1::regclass)"
# Every column an index of the table reads: its keys, expressions and predicate.
INDEXED_COLUMNS = """
SELECT DISTINCT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0
 AND (a.attnum = ANY(i.indkey)
      OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M')
      OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))
WHERE i.indrelid = $1::regclass
"""
# What a status callback before the end writes (call_status_callbacks, sql/0012); dial_sid too,
# once per call, when its dialled leg first calls back (a unique index: that one is not HOT).
CALL_STATUS_COLUMNS = {"status", "status_rank", "sequence_number", "answered_at", "ended_at", "duration_s",
                       "error_code", "updated_at"}

apply_calls = partial(apply_status_callbacks, price_kind="calls-prices", price_after_s=30,
                      quality_kind="voice-insights", quality_after_s=60, channel="commpro_events")


async def test_no_index_of_calls_reads_what_a_status_callback_changes_and_pages_keep_room(service):
    async with service.pool.acquire() as conn:
        indexed = {r["attname"] for r in await conn.fetch(INDEXED_COLUMNS, "calls")}
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'calls'::regclass")
    assert "list_status" in indexed and "user_id" in indexed  # the query sees the indexes
    assert not indexed & CALL_STATUS_COLUMNS
    assert "fillfactor=70" in options


async def hot_updates(conn, table: str, apply, batches: list[list[dict]]) -> tuple[int, int]:
    """(rows updated, of them HOT) in `table` while `batches` are applied, in this transaction."""
    before = await conn.fetchrow(HOT_UPDATES, table)
    for items in batches:
        assert await apply(conn, items) == ["done"] * len(items)
    after = await conn.fetchrow(HOT_UPDATES, table)
    return after[0] - before[0], after[1] - before[1]


async def test_a_calls_ringing_and_in_progress_are_hot_its_end_is_not(service):
    user, sid = new_user(), "CA" + uuid.uuid4().hex
    item = {"callId": None, "sid": sid, "seq": 0, "duration": None, "error": None, "leg": None, "parent": None,
            "target": None, "device": None, "accepts": None}
    async with service.pool.acquire() as conn, conn.transaction():
        call_id = await conn.fetchval(
            "INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank) "
            "VALUES ($1, $2, 'outbound', '+14155550100', '+447911123456', 'initiated', 0) RETURNING id", user, sid)
        live = [[{**item, "status": s, "rank": STATUS_RANK[s]}] for s in ("ringing", "in-progress")]
        assert await hot_updates(conn, "calls", apply_calls, live) == (2, 2)
        # The end changes list_status, which the list's status index reads.
        end = [[{**item, "status": "completed", "rank": STATUS_RANK["completed"], "duration": 30}]]
        assert await hot_updates(conn, "calls", apply_calls, end) == (1, 0)
        assert await conn.fetchval("SELECT list_status FROM calls WHERE id = $1", call_id) == "completed"
