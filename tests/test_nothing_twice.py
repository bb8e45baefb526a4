"""Nothing done twice, nothing lost: Twilio answering late, dropping the connection or hanging
(the sandbox's create faults, met by the real twilio client), Idempotency-Key leases and
retention, data keys cached only once committed, and events in commit order without gaps."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest

from commpro.appkeys import keyring_key
from commpro.guards import delete_old_keys
from commpro.jobs import run_due
from commpro.unconfirmed import sweep_unconfirmed
from tests.conftest import WAIT_S, new_user, until

DEST = "+447911123456"
# The client's deadline is well below the sandbox's late answer.
FAST = {"COMMPRO_TWILIO_TIMEOUT_S": "0.3"}


@pytest.fixture
async def fast(start_service):
    return await start_service(**FAST)


async def initiate(service, user, number, key):
    return await service.client.post("/api/calls/initiate", json={"from": number, "to": DEST},
                                     headers={**service.auth(user), "Idempotency-Key": key})


async def send(service, user, number, key, body="Bonjour"):
    return await service.client.post("/api/messages/send", json={"from": number, "to": DEST, "body": body},
                                     headers={**service.auth(user), "Idempotency-Key": key})


def creates_for(service, marker: str) -> int:
    """How many create requests the sandbox (Twilio) received for one of our rows."""
    return sum(marker in (form.get("StatusCallback") or "") for form in service.sandbox.create_requests)


async def get_json(service, user, path):
    resp = await service.client.get(path, headers=service.auth(user))
    assert resp.status == 200
    return await resp.json()


# -- 1. A late answer from Twilio is not a failure ---------------------------------------------


@pytest.mark.parametrize("fault", ["late", "drop"])
async def test_a_call_twilio_placed_without_answering_is_unconfirmed_then_adopted(fast, fault):
    service = fast
    user = new_user()
    number = await service.add_number(user, identity=user)
    await service.sandbox_control(createFaults=[fault], faultDelayS=1.0)
    first = await initiate(service, user, number, "k1")
    assert first.status == 202
    body = await first.json()
    assert body["status"] == "unconfirmed" and body["sid"] is None
    call_id = body["callId"]
    # Retries with the key answer the row as it stands and never reach Twilio again.
    for _ in range(3):
        again = await initiate(service, user, number, "k1")
        assert again.status in (201, 202) and again.headers["Idempotent-Replayed"] == "true"
        assert (await again.json())["callId"] == call_id
    await service.sandbox_idle()
    assert creates_for(service, call_id) == 1
    # The call Twilio did place was adopted by its bridge webhook and played to the end.
    call = await get_json(service, user, f"/api/calls/{call_id}")
    placed = [c for c in await service.sandbox.calls_from(number) if c.direction == "outbound-api"]
    assert len(placed) == 1
    assert call["sid"] == placed[0].sid and call["status"] == "completed" and call["durationSec"] == 7
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT price_state FROM calls WHERE id = $1::uuid", call_id) == "pending"
        # It will be priced.
        assert await conn.fetchval("SELECT state FROM jobs WHERE kind = 'calls-prices' AND key = $1", call_id) == (
            "pending")
        assert await conn.fetchval("SELECT count(*) FROM call_quality WHERE call_id = $1::uuid", call_id) == 1
    replay = await initiate(service, user, number, "k1")
    assert replay.status == 201 and (await replay.json())["status"] == "completed"


@pytest.mark.parametrize("fault", ["late", "drop"])
async def test_an_sms_twilio_took_without_answering_is_unconfirmed_then_adopted(fast, fault):
    service = fast
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(createFaults=[fault], faultDelayS=1.0)
    first = await send(service, user, number, "s1")
    assert first.status == 202
    body = await first.json()
    assert body["status"] == "unconfirmed" and body["sid"] is None
    again = await send(service, user, number, "s1")
    assert again.status in (201, 202) and (await again.json())["messageId"] == body["messageId"]
    await service.sandbox_idle()
    assert creates_for(service, body["messageId"]) == 1
    [conv] = (await get_json(service, user, "/api/messages/conversations"))["conversations"]
    thread = await get_json(service, user, f"/api/messages/conversations/{conv['contactId']}")
    [message] = thread["messages"]
    assert message["id"] == body["messageId"] and message["status"] == "delivered"
    assert message["body"] == "Bonjour"
    replay = await send(service, user, number, "s1")
    assert replay.status == 201 and (await replay.json())["sid"].startswith("SM")


async def test_a_hung_create_is_swept_as_never_confirmed_and_a_later_webhook_revives_it(fast):
    service = fast
    user = new_user()
    number = await service.add_number(user, identity=user)
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    await service.sandbox_control(createFaults=["hang"])
    resp = await initiate(service, user, number, "h1")
    assert resp.status == 202
    call_id = (await resp.json())["callId"]
    # Not yet: the window has not passed.
    assert await sweep_unconfirmed(service.app, "calls") == 0
    later = datetime.now(UTC) + timedelta(seconds=service.config.calls.unconfirmed_after_s + 1)
    # (The run's database is shared: other tests' rows may be swept too.)
    assert await sweep_unconfirmed(service.app, "calls", now=later) >= 1
    call = await get_json(service, user, f"/api/calls/{call_id}")
    assert call["status"] == "failed" and call["sid"] is None
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT error_message FROM calls WHERE id = $1::uuid", call_id) == (
            "never confirmed by Twilio")
    # Twilio did place it after all: the bridge fetch carries our callId.
    sid = "CA" + uuid.uuid4().hex
    bridge = await service.webhook(f"/webhook/voice/outbound?callId={call_id}", {"CallSid": sid, "From": number})
    assert bridge.status == 200 and "<Dial" in await bridge.text()
    call = await get_json(service, user, f"/api/calls/{call_id}")
    assert call["status"] == "initiated" and call["sid"] == sid and call["endedAt"] is None
    statuses = []
    while len(statuses) < 4:
        msg = orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data)
        statuses.append(msg["data"]["status"])
    assert statuses == ["initiated", "unconfirmed", "failed", "initiated"]
    await ws.close()


async def test_a_hung_sms_is_swept_and_its_status_callback_revives_it(fast):
    service = fast
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(createFaults=["hang"])
    message_id = (await (await send(service, user, number, "h2")).json())["messageId"]
    later = datetime.now(UTC) + timedelta(seconds=service.config.messages.unconfirmed_after_s + 1)
    assert await sweep_unconfirmed(service.app, "messages", now=later) >= 1
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, error_message FROM messages WHERE id = $1::uuid", message_id)
    assert tuple(row) == ("failed", "never confirmed by Twilio")
    sid = "SM" + uuid.uuid4().hex
    resp = await service.webhook(f"/webhook/status?messageId={message_id}",
                                 {"MessageSid": sid, "MessageStatus": "delivered"})
    assert resp.status == 204
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, sid, error_message FROM messages WHERE id = $1::uuid", message_id)
    assert tuple(row) == ("delivered", sid, None)


async def test_a_definite_refusal_stays_a_failure(fast):
    service = fast
    user = new_user()
    number = await service.add_number(user, forward_to="+15005550004")  # Twilio refuses: 422
    resp = await initiate(service, user, number, "r1")
    assert resp.status == 422
    [call] = (await get_json(service, user, "/api/calls"))["calls"]
    assert call["status"] == "failed" and call["errorCode"] is not None


# -- 2. Idempotency keys: one claim, a lease, takeover, retention -------------------------------


async def test_a_key_in_flight_is_409_and_taken_over_after_its_lease(start_service):
    service = await start_service(COMMPRO_TWILIO_TIMEOUT_S="5", COMMPRO_IDEMPOTENCY_LEASE_S="6")
    user = new_user()
    number = await service.add_number(user, identity=user)
    await service.sandbox_control(createFaults=["hang"])
    first = asyncio.create_task(initiate(service, user, number, "lease"))
    await until(lambda: _true(len(service.sandbox.create_requests) == 1))
    second = await initiate(service, user, number, "lease")
    assert second.status == 409
    assert (await first).status == 202
    # The first request is over: its row answers, Twilio is not asked again.
    third = await initiate(service, user, number, "lease")
    assert third.status == 202 and third.headers["Idempotent-Replayed"] == "true"
    assert len(service.sandbox.create_requests) == 1


async def _true(value: bool) -> bool:
    return value


async def test_concurrent_retries_of_one_key_reach_twilio_once(service):
    user = new_user()
    number = await service.add_number(user)
    answers = await asyncio.gather(*(send(service, user, number, "burst") for _ in range(8)))
    statuses = sorted(r.status for r in answers)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    assert len([f for f in service.sandbox.create_requests if f.get("From") == number]) == 1
    await service.sandbox_idle()


async def test_keys_expire_after_retention(start_service, empty_database_url):
    # A database of its own: the recurring job's one row is never held by another test's process.
    service = await start_service(DATABASE_URL=empty_database_url)
    user = new_user()
    number = await service.add_number(user)
    first = await send(service, user, number, "old")
    assert first.status == 201
    retention = timedelta(seconds=service.config.idempotency.retention_s)
    async with service.pool.acquire() as conn:
        assert await delete_old_keys(conn, datetime.now(UTC) - retention) == 0
    # The recurring job, a day later.
    await run_due(service.app, "idempotency-retention", now=datetime.now(UTC) + retention + timedelta(seconds=1))
    again = await send(service, user, number, "old")
    assert again.status == 201 and "Idempotent-Replayed" not in again.headers
    assert (await again.json())["messageId"] != (await first.json())["messageId"]
    await service.sandbox_idle()


# -- 3. A data key is cached only once it is committed -------------------------------------------


async def test_a_key_created_in_a_rolled_back_transaction_is_never_used(service, start_service):
    user = new_user()
    number = await service.add_number(user)
    keyring = service.app[keyring_key]

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with service.pool.acquire() as conn, conn.transaction():
            await keyring.data_key(conn, user, create=True)
            raise Rollback
    for text in ("un", "deux", "trois"):
        resp = await service.webhook("/webhook/sms", {"MessageSid": "SM" + uuid.uuid4().hex, "From": DEST,
                                                      "To": number, "Body": text})
        assert resp.status == 200
    # Read by another process (its own key cache, as after a restart or on another replica):
    # only a key that exists in a committed row opens what was stored.
    other = await start_service()
    [conv] = (await get_json(other, user, "/api/messages/conversations"))["conversations"]
    thread = await get_json(other, user, f"/api/messages/conversations/{conv['contactId']}")
    assert sorted(m["body"] for m in thread["messages"]) == ["deux", "trois", "un"]
    assert {m["content"] for m in thread["messages"]} == {"available"}


# -- 4. Live events arrive without gaps, in commit order ------------------------------------------


async def test_hundreds_of_concurrent_webhooks_reach_a_connected_client_exactly_once(start_service):
    service = await start_service(COMMPRO_DATABASE_POOL_MAX="20")
    user = new_user()
    number = await service.add_number(user)
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    count = 200

    async def sms(i: int) -> None:
        resp = await service.webhook("/webhook/sms", {"MessageSid": f"SM{uuid.uuid4().hex}", "From": DEST,
                                                      "To": number, "Body": f"m{i}"})
        assert resp.status == 200

    # The client is subscribed once an event published after its handshake reaches it.
    await sms(-1)
    first = orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data)
    await asyncio.gather(*(sms(i) for i in range(count)))
    live = [orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data) for _ in range(count)]
    ids = [e["id"] for e in live]
    assert ids == list(range(first["id"] + 1, first["id"] + count + 1))
    assert len({e["data"]["messageId"] for e in live}) == count
    await ws.close()
    # A reconnect with ?since replays what followed, each exactly once, in the same order.
    ws = await service.client.ws_connect(f"/api/events?since={first['id']}", headers=service.auth(user))
    replayed = [orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data) for _ in range(count)]
    assert [e["id"] for e in replayed] == ids
    assert [e["data"] for e in replayed] == [e["data"] for e in live]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.receive(), 0.3)  # nothing more: no repeats
    await ws.close()


async def test_a_lost_notification_is_filled_from_the_log(service):
    """Should a notification never reach this process, the next one shows the hole."""
    from commpro.events import store

    user = new_user()
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    async with service.pool.acquire() as conn, conn.transaction():
        first = await store.publish(conn, user, "test.one", {"n": 1})
    assert orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data)["id"] == first
    # An event that commits without a notification (as if it were lost on its way).
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE event_streams SET last_seq = last_seq + 1 WHERE user_id = $1", user)
        await conn.execute("INSERT INTO events (user_id, seq, type, payload) VALUES ($1, $2, 'test.lost', '{}')",
                           user, first + 1)
    async with service.pool.acquire() as conn, conn.transaction():
        await store.publish(conn, user, "test.three", {"n": 3})
    got = [orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data) for _ in range(2)]
    assert [(e["id"], e["type"]) for e in got] == [(first + 1, "test.lost"), (first + 2, "test.three")]
    await ws.close()


async def test_a_stream_without_since_starts_at_its_lease_so_even_a_first_lost_notification_is_filled(service):
    from commpro.events import store

    user = new_user()
    async with service.pool.acquire() as conn, conn.transaction():
        before = await store.publish(conn, user, "test.before", {})  # before the stream: not sent
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    async with service.pool.acquire() as conn, conn.transaction():  # committed, never notified
        await conn.execute("UPDATE event_streams SET last_seq = last_seq + 1 WHERE user_id = $1", user)
        await conn.execute("INSERT INTO events (user_id, seq, type, payload) VALUES ($1, $2, 'test.lost', '{}')",
                           user, before + 1)
    async with service.pool.acquire() as conn, conn.transaction():
        await store.publish(conn, user, "test.next", {})
    got = [orjson.loads((await asyncio.wait_for(ws.receive(), WAIT_S)).data) for _ in range(2)]
    assert [(e["id"], e["type"]) for e in got] == [(before + 1, "test.lost"), (before + 2, "test.next")]
    await ws.close()


async def test_unknown_fault_is_refused_by_the_sandbox(service):
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    resp = await service.client.post("/_sandbox/control", json={"createFaults": ["explode"]},
                                     headers={"Authorization": auth})
    assert resp.status == 400


async def test_a_key_left_in_flight_before_leases_existed_is_taken_over(service):
    """Keys claimed by the code before leases have no lease: they count as lapsed, not stuck."""
    user = new_user()
    number = await service.add_number(user)
    body = {"from": number, "to": DEST, "body": "Bonjour"}
    import hashlib

    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with service.pool.acquire() as conn:
        await conn.execute("INSERT INTO idempotency_keys (user_id, scope, key, request_hash) "
                           "VALUES ($1, 'messages.send', 'legacy', $2)", user, digest)
    resp = await send(service, user, number, "legacy")
    assert resp.status == 201 and "Idempotent-Replayed" not in resp.headers
    await service.sandbox_idle()
