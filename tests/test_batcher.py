"""Group commit of status callbacks (commpro.batcher, sql/0011 and 0012): concurrent callbacks applied
together, each acknowledged only once committed, exactly once, with the owner's events numbered
without gaps; a failing batch fails nobody innocent; shutdown drops nothing."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import orjson
import pytest

from commpro.appkeys import metrics_key
from commpro.batcher import Batcher, ItemFailed
from commpro.calls.store import STATUS_RANK as CALL_RANK
from commpro.db import create_pool
from commpro.messages.store import STATUS_RANK as MESSAGE_RANK
from tests.conftest import WAIT_S, create_database, new_user
from tests.test_messages import inbound
from tests.test_outage import postgres  # noqa: F401 - a PostgreSQL of this test's own, to stop

DEST = "+447911123456"
CALLER = "+14155550100"
INSERT_CALL = """
INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, 'outbound', $3, $4, 'initiated', 0) RETURNING id
"""
INSERT_CONTACT = "INSERT INTO contacts (user_id, phone_number) VALUES ($1, $2) RETURNING id"
INSERT_MESSAGE = """
INSERT INTO messages (user_id, contact_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, 'outbound', $4, $5, 'queued', 2) RETURNING id
"""


async def make_calls(service, user: str, count: int) -> dict[str, uuid.UUID]:
    """`count` placed outbound calls of `user`, by SID."""
    sids = {}
    async with service.pool.acquire() as conn:
        for _ in range(count):
            sid = "CA" + uuid.uuid4().hex
            sids[sid] = await conn.fetchval(INSERT_CALL, user, sid, CALLER, DEST)
    return sids


async def events_of(service, user: str) -> list[dict]:
    async with service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT seq, type, payload FROM events WHERE user_id = $1 ORDER BY seq", user)
    return [{"id": r["seq"], "type": r["type"], "data": r["payload"]} for r in rows]


async def receive(ws, count: int) -> list[dict]:
    return [orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data) for _ in range(count)]


async def call_status(service, sid: str, status: str, path: str = "/webhook/voice/status", **extra) -> None:
    """Post one status callback; once answered, its effect is visible from another connection."""
    resp = await service.webhook(path, {"CallSid": sid, "CallStatus": status, **extra})
    assert resp.status == 204
    rank = await service.pool.fetchval("SELECT status_rank FROM calls WHERE sid = $1 OR dial_sid = $1", sid)
    assert rank >= CALL_RANK[status]


def assert_forward_only(events: list[dict], key: str, ranks: dict[str, int]) -> dict[str, list[str]]:
    """A new user's events: numbered 1, 2, 3... without a gap; each row's statuses strictly
    forward. The statuses by row."""
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    by_row: dict[str, list[str]] = {}
    for event in events:
        by_row.setdefault(event["data"][key], []).append(event["data"]["status"])
    for statuses in by_row.values():
        assert [ranks[s] for s in statuses] == sorted({ranks[s] for s in statuses})
    return by_row


def batched_all(logs) -> bool:
    """No batch failed, and the batch statement did every item (none left to the old code)."""
    return not [r for r in logs.records() if r["event"] in ("batch_failed", "status_callback_alone")]


def batched_items(service, batch: str) -> float:
    """How many items this service's batches of `batch` held, from /metrics' histogram."""
    registry = service.app[metrics_key].registry
    return registry.get_sample_value("commpro_webhook_batch_size_sum", {"batch": batch})


async def test_concurrent_callbacks_of_one_user_are_applied_once_in_order(service, logs):
    user = new_user()
    calls = await make_calls(service, user, 40)
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    posts = [(sid, status) for sid in calls for status in ("ringing", "in-progress", "completed")]
    posts += [(sid, "completed") for sid in list(calls)[:5] for _ in range(7)]  # the same webhook 8 times
    random.shuffle(posts)
    await asyncio.gather(*(call_status(service, sid, status, CallDuration="12") for sid, status in posts))
    stored = await events_of(service, user)
    # Every event reaches the stream, in order, as the log has it.
    received = await receive(ws, len(stored))
    assert [{k: m[k] for k in ("id", "type", "data")} for m in received] == stored
    by_call = assert_forward_only(stored, "callId", CALL_RANK)
    assert set(by_call) == {str(i) for i in calls.values()}
    assert all(statuses[-1] == "completed" for statuses in by_call.values())
    async with service.pool.acquire() as conn:
        ids = list(calls.values())
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE id = ANY($1) AND status = 'completed' "
                                   "AND duration_s = 12 AND ended_at IS NOT NULL", ids) == len(ids)
        # Priced and enrolled for Voice Insights, once each.
        keys = [str(i) for i in ids]
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = 'calls-prices' AND key = ANY($1)",
                                   keys) == len(ids)
        assert await conn.fetchval("SELECT count(*) FROM call_quality WHERE call_id = ANY($1)", ids) == len(ids)
    await ws.close()
    assert batched_all(logs)
    assert batched_items(service, "call-status") == len(posts)


async def test_concurrent_message_status_callbacks_move_each_message_once(service, logs):
    user = new_user()
    async with service.pool.acquire() as conn:
        contact = await conn.fetchval(INSERT_CONTACT, user, DEST)
        messages = {}
        for _ in range(30):
            sid = "SM" + uuid.uuid4().hex
            messages[sid] = await conn.fetchval(INSERT_MESSAGE, user, contact, sid, CALLER, DEST)
    posts = [(sid, status) for sid in messages for status in ("sent", "delivered")]
    posts += [(sid, "delivered") for sid in list(messages)[:3] for _ in range(7)]
    random.shuffle(posts)

    async def post(sid: str, status: str) -> None:
        resp = await service.webhook("/webhook/status", {"MessageSid": sid, "MessageStatus": status})
        assert resp.status == 204
        rank = await service.pool.fetchval("SELECT status_rank FROM messages WHERE sid = $1", sid)
        assert rank >= MESSAGE_RANK[status]

    await asyncio.gather(*(post(sid, status) for sid, status in posts))
    by_message = assert_forward_only(await events_of(service, user), "messageId", MESSAGE_RANK)
    assert set(by_message) == {str(i) for i in messages.values()}
    assert all(statuses[-1] == "delivered" for statuses in by_message.values())
    keys = [str(i) for i in messages.values()]
    assert await service.pool.fetchval("SELECT count(*) FROM jobs WHERE kind = 'messages-prices' AND key = ANY($1)",
                                       keys) == len(keys)
    assert batched_all(logs)
    assert batched_items(service, "message-status") == len(posts)


async def test_unknown_sids_and_known_ones_in_the_same_moment(service, logs):
    user = new_user()
    [sid] = await make_calls(service, user, 1)
    unknown = ["CA" + uuid.uuid4().hex for _ in range(5)]
    answers = await asyncio.gather(*(service.webhook("/webhook/voice/status", {"CallSid": s, "CallStatus": "ringing"})
                                     for s in [sid, *unknown]))
    assert [a.status for a in answers] == [204] * 6
    assert await service.pool.fetchval("SELECT status FROM calls WHERE sid = $1", sid) == "ringing"
    assert logs.getvalue().count("status_for_unknown_call") == 5


# A database fault on one call's leg, the first `times` times it is written: a real failure in
# the middle of a batch, not a mock.
FAIL_LEG = """
CREATE SEQUENCE {name}_seq;
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.target = '{target}' AND nextval('{name}_seq') <= {times} THEN
        RAISE EXCEPTION 'injected fault';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE INSERT ON call_legs FOR EACH ROW EXECUTE FUNCTION {name}();
"""
UNDO_FAIL_LEG = """
DROP TRIGGER {name} ON call_legs; DROP FUNCTION {name}(); DROP SEQUENCE {name}_seq;
"""


@pytest.mark.parametrize("times", [1, 2])
async def test_a_failing_item_fails_nobody_else(service, logs, times):
    """Once: the batch is rolled back and every item, the faulty one too, succeeds alone. Twice:
    it fails alone too, and the one-at-a-time code answers it, as it always has."""
    user = new_user()
    calls = await make_calls(service, user, 20)
    bad_sid, bad_target = next(iter(calls)), "+33999999999"
    name = "fail_leg_" + uuid.uuid4().hex[:12]
    await service.pool.execute(FAIL_LEG.format(name=name, target=bad_target, times=times))
    try:
        posts = [(sid, "CH" + sid[2:], status) for sid in calls for status in ("in-progress", "completed")]
        random.shuffle(posts)
        await asyncio.gather(*(
            call_status(service, leg, status, f"/webhook/voice/status?leg=dial&callId={calls[sid]}",
                        To=bad_target if sid == bad_sid else DEST, ParentCallSid=sid)
            for sid, leg, status in posts))
    finally:
        await service.pool.execute(UNDO_FAIL_LEG.format(name=name))
    async with service.pool.acquire() as conn:
        legs = await conn.fetch("SELECT call_id, status FROM call_legs WHERE call_id = ANY($1)", list(calls.values()))
        assert sorted(r["call_id"] for r in legs) == sorted(calls.values())
        assert {r["status"] for r in legs} == {"completed"}
    by_call = assert_forward_only(await events_of(service, user), "callId", CALL_RANK)
    assert all(statuses[-1] == "completed" for statuses in by_call.values()) and len(by_call) == len(calls)
    alone = [r for r in logs.records() if r["event"] == "status_callback_alone"]
    assert [r["call_sid"][2:] for r in alone] == ([bad_sid[2:]] if times == 2 else [])


async def test_callbacks_during_an_outage_are_503_without_running_each_alone(start_service, postgres, logs):  # noqa: F811
    service = await start_service(DATABASE_URL=await create_database(postgres.url))
    await postgres.stop()
    calls = [service.webhook("/webhook/voice/status", {"CallSid": "CA" + uuid.uuid4().hex, "CallStatus": "ringing"})
             for _ in range(6)]
    messages = [service.webhook("/webhook/status", {"MessageSid": "SM" + uuid.uuid4().hex, "MessageStatus": "sent"})
                for _ in range(6)]
    answers = await asyncio.gather(*calls, *messages)
    assert [a.status for a in answers] == [503] * 12
    lines = [r["event"] for r in logs.records()]
    assert "batch_failed" not in lines and "unhandled_error" not in lines


FAIL_MESSAGE = """
CREATE SEQUENCE {name}_seq;
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.from_number = '{sender}' AND nextval('{name}_seq') <= 1 THEN
        RAISE EXCEPTION 'injected fault';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION {name}();
"""
UNDO_FAIL_MESSAGE = "DROP TRIGGER {name} ON messages; DROP FUNCTION {name}(); DROP SEQUENCE {name}_seq;"


@pytest.mark.parametrize("fault", [False, True])
async def test_concurrent_inbound_messages_are_grouped_and_each_stored_once(service, logs, fault):
    """Inbound SMS for three users at once, one of them sent 8 times: grouped into fewer
    transactions than messages, each stored once with one event, each user's events numbered
    without a gap. With a fault on one message's first insert, its batch is rolled back and
    every message of it is stored alone: still each once."""
    users = [new_user() for _ in range(3)]
    numbers = [await service.add_number(user) for user in users]
    sender = "+4479" + str(uuid.uuid4().int % 10**8).zfill(8)
    posts = [(numbers[i % 3], "SM" + uuid.uuid4().hex, "+4478" + str(i).zfill(8)) for i in range(60)]
    twice = posts[0]
    posts += [twice] * 7 + [(numbers[1], "SM" + uuid.uuid4().hex, sender)]
    random.shuffle(posts)
    name = "fail_message_" + uuid.uuid4().hex[:12]
    if fault:
        await service.pool.execute(FAIL_MESSAGE.format(name=name, sender=sender))
    try:
        await asyncio.gather(*(inbound(service, peer, number, "Bonjour", MessageSid=sid)
                               for number, sid, peer in posts))
    finally:
        if fault:
            await service.pool.execute(UNDO_FAIL_MESSAGE.format(name=name))
    sids = {sid for _, sid, _ in posts}
    async with service.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM messages WHERE sid = ANY($1)", list(sids))
    assert stored == len(sids) == 61
    received = 0
    for user in users:
        events = await events_of(service, user)
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert len({e["data"]["messageId"] for e in events}) == len(events)
        received += len(events)
    assert received == len(sids)
    assert batched_items(service, "inbound-sms") == len(posts)
    registry = service.app[metrics_key].registry
    batches = registry.get_sample_value("commpro_webhook_batch_size_count", {"batch": "inbound-sms"})
    assert batches < len(posts)  # grouped: fewer commits than messages
    if not fault:
        assert not [r for r in logs.records() if r["event"] == "batch_failed"]


# -- the batcher itself, on the real pool ------------------------------------------------------


@pytest.fixture
async def probe_table(service):
    name = "batch_probe_" + uuid.uuid4().hex[:12]
    await service.pool.execute(f"CREATE TABLE {name} (item text NOT NULL)")
    yield name
    await service.pool.execute(f"DROP TABLE {name}")


async def test_a_batch_rolled_back_midway_leaves_nothing_half_applied(service, probe_table):
    attempts: list[list[str]] = []

    async def apply(conn, items):
        attempts.append(list(items))
        for item in items:
            if item == "bad":
                raise ValueError("a bad item")
            await conn.execute(f"INSERT INTO {probe_table} (item) VALUES ($1)", item)
        return [f"ok:{item}" for item in items]

    batcher = Batcher("probe", service.pool, apply)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in ("a", "b", "bad", "c")), return_exceptions=True)
    await batcher.close()
    # One batch first (a and b written, then the fault), rolled back; then each alone.
    assert attempts == [["a", "b", "bad", "c"], ["a"], ["b"], ["bad"], ["c"]]
    assert results[:2] == ["ok:a", "ok:b"] and results[3] == "ok:c"
    assert isinstance(results[2], ItemFailed) and isinstance(results[2].__cause__, ValueError)
    rows = await service.pool.fetch(f"SELECT item FROM {probe_table} ORDER BY item")
    assert [r["item"] for r in rows] == ["a", "b", "c"]


async def test_shutdown_applies_what_is_queued_and_runs_later_items_alone(service, probe_table):
    release, in_flight = asyncio.Event(), asyncio.Event()
    sizes: list[int] = []

    async def apply(conn, items):
        sizes.append(len(items))
        in_flight.set()
        await release.wait()
        await conn.executemany(f"INSERT INTO {probe_table} (item) VALUES ($1)", [(i,) for i in items])
        return list(items)

    batcher = Batcher("probe", service.pool, apply)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit("first"))
    await asyncio.wait_for(in_flight.wait(), WAIT_S)  # the first batch holds its transaction
    queued = [asyncio.ensure_future(batcher.submit(f"queued{i}")) for i in range(3)]
    closing = asyncio.ensure_future(batcher.close())
    release.set()
    await closing
    assert await first == "first" and [await q for q in queued] == ["queued0", "queued1", "queued2"]
    assert await batcher.submit("late") == "late"
    assert sizes == [1, 3, 1]
    assert await service.pool.fetchval(f"SELECT count(*) FROM {probe_table}") == 5


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_batches_in_flight_at_once_are_bounded(service, probe_table, in_flight):
    """`in_flight` batches run at once, each on its own connection; what comes meanwhile waits
    for a slot, gathered into the next batch; shutdown waits for every running batch."""
    running, most, release, started = 0, 0, asyncio.Event(), asyncio.Queue()

    async def apply(conn, items):
        nonlocal running, most
        running += 1
        most = max(most, running)
        started.put_nowait(list(items))
        await release.wait()
        await conn.executemany(f"INSERT INTO {probe_table} (item) VALUES ($1)", [(i,) for i in items])
        running -= 1
        return list(items)

    batcher = Batcher("probe", service.pool, apply, in_flight=in_flight)
    batcher.start()
    submitted = []
    for i in range(in_flight):  # each starts a batch of its own while the others hold theirs
        submitted.append(asyncio.ensure_future(batcher.submit(f"early{i}")))
        assert await asyncio.wait_for(started.get(), WAIT_S) == [f"early{i}"]
    submitted += [asyncio.ensure_future(batcher.submit(f"late{i}")) for i in range(4)]
    for _ in range(50):  # loop turns enough for the flusher to start another batch, were a slot free
        await asyncio.sleep(0)
    assert most == in_flight and started.empty()
    closing = asyncio.ensure_future(batcher.close())
    release.set()
    await closing
    assert await started.get() == [f"late{i}" for i in range(4)]  # one batch, once a slot was free
    assert [await s for s in submitted] == [f"early{i}" for i in range(in_flight)] + [f"late{i}" for i in range(4)]
    assert await service.pool.fetchval(f"SELECT count(*) FROM {probe_table}") == in_flight + 4


def holding_apply(started: asyncio.Queue, release: asyncio.Event):
    """An apply that reports each batch it gets, and holds the batch ["held"] until `release`."""

    async def apply(conn, items):
        started.put_nowait(list(items))
        if items == ["held"]:
            await release.wait()
        return list(items)

    return apply


async def test_a_second_batch_starts_beside_a_held_one_only_once_overlap_at_items_wait(service):
    """With `overlap_at`, what comes while a batch runs waits for it, unless that many items wait:
    then they run beside it, and a batch held up (here on an event; in life a slow commit or a
    row lock) no longer holds everything up."""
    started, release = asyncio.Queue(), asyncio.Event()
    apply = holding_apply(started, release)

    batcher = Batcher("probe", service.pool, apply, one_statement=True, in_flight=2, overlap_at=3)
    batcher.start()
    held = asyncio.ensure_future(batcher.submit("held"))
    try:
        assert await asyncio.wait_for(started.get(), WAIT_S) == ["held"]
        waiting = [asyncio.ensure_future(batcher.submit(f"w{i}")) for i in range(2)]
        for _ in range(50):  # loop turns enough for another batch to start, were it to
            await asyncio.sleep(0)
        assert started.empty()
        waiting.append(asyncio.ensure_future(batcher.submit("w2")))
        assert await asyncio.wait_for(started.get(), WAIT_S) == ["w0", "w1", "w2"]
        assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT_S) == ["w0", "w1", "w2"]
        assert not held.done()  # answered while the first batch is still held
    finally:
        release.set()
        await batcher.close()
    assert await held == "held"


async def test_a_cancelled_batch_fails_its_requests_and_the_next_batch_runs(service):
    """A batch's task cancelled (a shutdown's timeout) answers its requests with ItemFailed, whose
    handlers then do the work alone, rather than leaving them waiting; what is queued still runs."""
    started, release = asyncio.Queue(), asyncio.Event()
    apply = holding_apply(started, release)

    batcher = Batcher("probe", service.pool, apply, one_statement=True)
    batcher.start()
    try:
        held = asyncio.ensure_future(batcher.submit("held"))
        assert await asyncio.wait_for(started.get(), WAIT_S) == ["held"]
        queued = asyncio.ensure_future(batcher.submit("queued"))
        await asyncio.sleep(0)  # one turn: queued behind the held batch
        [task] = batcher._running  # the batch's task, as a cancellation at shutdown finds it
        task.cancel()
        with pytest.raises(ItemFailed):
            await asyncio.wait_for(held, WAIT_S)
        assert await asyncio.wait_for(queued, WAIT_S) == "queued"
    finally:
        release.set()
        await batcher.close()


async def test_a_committed_batch_sends_the_next_before_answering_its_own(service):
    """The batch that committed starts the next batch before its requests are answered: the next
    statement is on its way to PostgreSQL while this process writes the answers."""
    order: list[tuple[str, object]] = []
    first_running, release = asyncio.Event(), asyncio.Event()

    async def apply(conn, items):
        order.append(("applied", list(items)))
        if items == ["first"]:
            first_running.set()
            await release.wait()
        return list(items)

    async def request(item):
        order.append(("answered", await batcher.submit(item)))

    # Connections open beforehand: the next batch's must not wait for a connect. One statement
    # (as CommPro's batchers): no BEGIN round trip before `apply`.
    pool = await create_pool(service.config.database.url, min_size=2, max_size=2)
    batcher = Batcher("probe", pool, apply, one_statement=True)
    batcher.start()
    try:
        first = asyncio.ensure_future(request("first"))
        await asyncio.wait_for(first_running.wait(), WAIT_S)
        second = asyncio.ensure_future(request("second"))
        await asyncio.sleep(0)  # one turn: the second request is queued behind the first batch
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    finally:
        await batcher.close()
        await pool.close()
    assert order == [("applied", ["first"]), ("applied", ["second"]), ("answered", "first"), ("answered", "second")]


async def test_a_batch_whose_connection_fails_to_go_back_is_answered_once(service, logs):
    """Committed and answered, then the connection's release fails (asyncpg closes it): the
    requests keep their answers and nothing runs again."""
    applied: list[list[str]] = []
    resets = 0

    async def failing_reset(conn):
        nonlocal resets
        resets += 1
        if resets == 1:
            raise ConnectionResetError("the connection went while it was given back")

    async def apply(conn, items):
        applied.append(list(items))
        return [f"ok:{item}" for item in items]

    pool = await asyncpg.create_pool(service.config.database.url, min_size=1, max_size=2, reset=failing_reset)
    batcher = Batcher("probe", pool, apply)
    batcher.start()
    try:
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in "ab")), WAIT_S)
        assert await asyncio.wait_for(batcher.submit("c"), WAIT_S) == "ok:c"  # the pool goes on, connecting anew
    finally:
        await batcher.close()
        await pool.close()
    assert results == ["ok:a", "ok:b"] and applied == [["a", "b"], ["c"]]
    assert [r["event"] for r in logs.records() if r.get("batch") == "probe"] == ["batch_release_failed"]


async def test_a_bug_in_a_batch_fails_its_requests_instead_of_leaving_them_waiting(service, logs):
    """Whatever breaks outside the batch's transaction (here its metrics), the requests of that
    batch are failed (their handlers then do the work alone), never left waiting."""

    class BrokenMeters:
        @property
        def batch_sizes(self):
            raise RuntimeError("broken metrics")

    async def apply(conn, items):
        return list(items)

    batcher = Batcher("probe", service.pool, apply, metrics=BrokenMeters())
    batcher.start()
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in "abc"), return_exceptions=True),
                                     WAIT_S)
    await batcher.close()
    assert all(isinstance(r, ItemFailed) for r in results)
    assert [r["event"] for r in logs.records() if r.get("batch") == "probe"][:1] == ["batch_crashed"]


PAUSE_LEG = """
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sid = '{sid}' THEN
        PERFORM pg_sleep(1);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {name} AFTER UPDATE ON call_legs FOR EACH ROW EXECUTE FUNCTION {name}();
"""
INSERT_INBOUND_CALL = """
INSERT INTO calls (user_id, sid, dial_sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, 'inbound', $4, $5, 'ringing', 1) RETURNING id
"""


@pytest.mark.parametrize("path", ["status", "key pressed"])
async def test_a_leg_that_takes_the_call_and_a_batch_wait_for_each_other(service, path):
    """A leg that takes an inbound call, by answering (its status callback run alone) or by the
    key pressed on a screened phone, locks the call before the leg, as a batch does (sql/0012):
    a batch touching the same call and leg in between waits for it instead of deadlocking. The
    leg's update is held open by a trigger while the 'batch' (this test's transaction: the call,
    then the leg) comes in."""
    user, leg = new_user(), "CA" + uuid.uuid4().hex
    device, target = ("app", "client:" + user) if path == "status" else ("phone", DEST)
    call_id = await service.pool.fetchval(INSERT_INBOUND_CALL, user, "CA" + uuid.uuid4().hex,
                                          "CA" + uuid.uuid4().hex, CALLER, DEST)  # another leg rang first
    # The leg rang before (its row exists: updating it takes no key-share lock on the call, which
    # would have ordered the two anyway).
    await service.pool.execute("INSERT INTO call_legs (sid, call_id, device, target, status, status_rank) "
                               "VALUES ($1, $2, $3, $4, 'ringing', 1)", leg, call_id, device, target)
    name = "pause_leg_" + uuid.uuid4().hex[:12]
    await service.pool.execute(PAUSE_LEG.format(name=name, sid=leg))
    try:
        if path == "status":
            accept = service.webhook(f"/webhook/voice/status?leg=dial&callId={call_id}",
                                     {"CallSid": leg, "CallStatus": "in-progress", "To": target})
        else:
            accept = service.webhook(f"/webhook/voice/screen/result?callId={call_id}",
                                     {"CallSid": leg, "Digits": "1", "To": target})
        accepting = asyncio.ensure_future(accept)
        paused = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%call_legs%'"
        async with asyncio.timeout(WAIT_S):
            while not await service.pool.fetchval(paused):
                await asyncio.sleep(0.01)  # the accepting leg is being updated, its transaction open
        async with service.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM calls WHERE id = $1 FOR UPDATE", call_id)
            await conn.execute("SELECT 1 FROM call_legs WHERE sid = $1 FOR UPDATE", leg)
        assert (await asyncio.wait_for(accepting, WAIT_S)).status in (200, 204)
    finally:
        await service.pool.execute(f"DROP TRIGGER {name} ON call_legs; DROP FUNCTION {name}();")
    assert await service.pool.fetchval("SELECT answered_by FROM calls WHERE id = $1", call_id) == device


INSERT_MESSAGE_WITH_ID = """
INSERT INTO messages (id, user_id, contact_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, $4, 'outbound', $5, $6, 'sent', 4)
"""


@pytest.mark.parametrize("higher_first", [True, False])
async def test_a_conversation_read_and_a_status_batch_wait_for_each_other(service, higher_first):
    """PUT .../read marks every message of the conversation, sent ones included; a status batch
    locks the messages it moves in id order. The read takes them in id order too, whatever order
    its scan finds them in: a batch holding the first and then taking the second waits for the
    read, or the read for it, instead of deadlocking."""
    user = new_user()
    contact = await service.pool.fetchval(INSERT_CONTACT, user, DEST)
    later, earlier = uuid.UUID(int=2**128 - 1 - random.randrange(2**64)), uuid.UUID(int=random.randrange(2**64))
    for message_id in ((later, earlier) if higher_first else (earlier, later)):
        await service.pool.execute(INSERT_MESSAGE_WITH_ID, message_id, user, contact, "SM" + uuid.uuid4().hex,
                                   CALLER, DEST)
    await service.pool.execute("INSERT INTO conversations (contact_id, user_id, last_message_at) VALUES ($1, $2, now())",
                               contact, user)
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", earlier)  # as a batch: id order
        reading = asyncio.ensure_future(service.client.put(f"/api/messages/conversations/{contact}/read",
                                                           headers=service.auth(user)))
        waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                   "AND query LIKE '%read_at%' AND datname = current_database()")
        async with asyncio.timeout(WAIT_S):
            while not await service.pool.fetchval(waiting):
                await asyncio.sleep(0.01)  # the read waits for the message this 'batch' holds
        await conn.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", later)
    assert (await asyncio.wait_for(reading, WAIT_S)).status == 200
    assert await service.pool.fetchval("SELECT count(*) FROM messages WHERE contact_id = $1 AND read_at IS NOT NULL",
                                       contact) == 2
