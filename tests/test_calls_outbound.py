"""POST /api/calls/initiate end to end: the real twilio client, the sandbox, signed callbacks."""

from __future__ import annotations

import io

import pytest

from commpro.sandbox import magic
from tests.conftest import fresh_number, new_user

DEST = "+447911123456"


@pytest.fixture
async def alice(service):
    user = new_user()
    number = await service.add_number(user, identity=user + "-app")
    return user, number


async def initiate(service, user, from_, to=DEST, headers=None):
    return await service.client.post("/api/calls/initiate", json={"from": from_, "to": to},
                                     headers={**service.auth(user), **(headers or {})})


async def get_call(service, user, call_id):
    resp = await service.client.get(f"/api/calls/{call_id}", headers=service.auth(user))
    assert resp.status == 200
    return await resp.json()


async def test_bridged_call_rings_the_user_then_dials_the_destination(service, alice):
    user, number = alice
    resp = await initiate(service, user, number)
    assert resp.status == 201
    body = await resp.json()
    assert body["status"] == "initiated" and body["sid"].startswith("CA")
    await service.sandbox_idle()
    first = await service.sandbox.call(body["sid"])
    assert first.to == f"client:{user}-app" and first.from_ == number
    [second] = await service.sandbox.child_calls(first.sid)
    assert second.to == DEST and second.from_ == number
    call = await get_call(service, user, body["callId"])
    assert call["status"] == "completed" and call["direction"] == "outbound"
    assert (call["from"], call["to"], call["sid"]) == (number, DEST, first.sid)
    assert call["durationSec"] == 7 and call["answeredAt"] and call["endedAt"]
    assert call["errorCode"] is None and call["recording"] is None and call["price"] is None


async def test_forward_to_phone_rings_first_when_set(service):
    user = new_user()
    phone = fresh_number()
    number = await service.add_number(user, identity=user, forward_to=phone)
    body = await (await initiate(service, user, number)).json()
    await service.sandbox_idle()
    assert (await service.sandbox.call(body["sid"])).to == phone


@pytest.mark.parametrize("destination, status, code", [
    ("+15005550002", "failed", 13227),
    ("+15005550001", "failed", 13224),
    (magic.BUSY, "busy", None),
    (magic.NO_ANSWER, "no-answer", None),
])
async def test_unreachable_destinations_end_the_call(service, alice, destination, status, code):
    user, number = alice
    body = await (await initiate(service, user, number, to=destination)).json()
    await service.sandbox_idle()
    call = await get_call(service, user, body["callId"])
    assert (call["status"], call["errorCode"]) == (status, code)
    assert call["answeredAt"] is None


async def test_user_not_answering_ends_the_call_as_no_answer(service):
    user = new_user()
    number = await service.add_number(user, forward_to=magic.NO_ANSWER)
    body = await (await initiate(service, user, number)).json()
    await service.sandbox_idle()
    call = await get_call(service, user, body["callId"])
    assert call["status"] == "no-answer"
    # The destination was never dialled.
    assert not await service.sandbox.child_calls(body["sid"])


@pytest.mark.parametrize("first_leg, code", [(n, err[1]) for n, err in magic.CALL_TO_ERRORS.items()])
async def test_first_leg_refused_by_twilio_is_422_and_the_call_fails(service, first_leg, code):
    user = new_user()
    number = await service.add_number(user, forward_to=first_leg)
    resp = await initiate(service, user, number)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "twilio_rejected" and error["details"] == {"twilioCode": code}
    calls = await (await service.client.get("/api/calls", headers=service.auth(user))).json()
    [call] = calls["calls"]
    assert (call["status"], call["errorCode"], call["sid"]) == ("failed", code, None)


async def test_account_out_of_funds_is_402(service, alice):
    user, number = alice
    await service.sandbox_control(account="suspended")
    resp = await initiate(service, user, number)
    assert resp.status == 402
    assert (await resp.json())["error"]["details"] == {"twilioCode": 20005}


async def test_twilio_unreachable_is_503_and_the_call_fails_with_the_reason(start_service):
    from aiohttp.test_utils import unused_port

    service = await start_service(TWILIO_API_BASE_URL=f"http://127.0.0.1:{unused_port()}")
    user = new_user()
    number = await service.add_number(user, identity=user)
    resp = await initiate(service, user, number)
    assert resp.status == 503
    [call] = (await (await service.client.get("/api/calls", headers=service.auth(user))).json())["calls"]
    assert call["status"] == "failed"
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT error_message FROM calls WHERE id = $1::uuid", call["id"]) == (
            "Twilio is unreachable")


async def test_idempotency_key_replays_without_a_second_twilio_call(service, alice):
    user, number = alice
    key = {"Idempotency-Key": "k-" + user}
    first = await initiate(service, user, number, headers=key)
    second = await initiate(service, user, number, headers=key)
    assert first.status == second.status == 201
    assert await first.json() == await second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    await service.sandbox_idle()
    first_legs = [c for c in await service.sandbox.calls_from(number) if c.direction == "outbound-api"]
    assert len(first_legs) == 1
    other = await service.client.post("/api/calls/initiate", json={"from": number, "to": "+447911123457"},
                                      headers={**service.auth(user), **key})
    assert other.status == 422
    assert "another request" in (await other.json())["error"]["message"]


async def test_idempotency_key_replays_a_refusal_too(service):
    user = new_user()
    number = await service.add_number(user, forward_to="+15005550004")
    key = {"Idempotency-Key": "refused"}
    first, second = [await initiate(service, user, number, headers=key) for _ in range(2)]
    assert first.status == second.status == 422
    assert await first.json() == await second.json()
    rows = (await (await service.client.get("/api/calls", headers=service.auth(user))).json())["calls"]
    assert len(rows) == 1


async def test_rate_limit_per_user(start_service):
    service = await start_service(COMMPRO_CALLS_RATE_PER_MINUTE="2")
    user, other = new_user(), new_user()
    number = await service.add_number(user, identity=user)
    other_number = await service.add_number(other, identity=other)
    statuses = [(await initiate(service, user, number)).status for _ in range(2)]
    limited = await initiate(service, user, number)
    assert statuses == [201, 201] and limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert (await limited.json())["error"]["code"] == "rate_limited"
    assert (await initiate(service, other, other_number)).status == 201
    await service.sandbox_idle()


@pytest.mark.parametrize("body, fields", [
    ({}, {"from", "to"}),
    ({"from": "0612345678", "to": DEST}, {"from"}),
    ({"from": "+33612345678", "to": "+1555"}, {"to"}),
    ({"from": 33612345678, "to": DEST}, {"from"}),
    ({"from": "+33612345678", "to": DEST, "extra": 1}, {"extra"}),
    ({"from": None, "to": DEST}, {"from"}),
])
async def test_bad_input_names_the_fields(service, body, fields):
    resp = await service.client.post("/api/calls/initiate", json=body, headers=service.auth())
    assert resp.status == 400
    assert set((await resp.json())["error"]["details"]) == fields


async def test_not_json_and_too_large_and_not_owned(service, alice):
    user, number = alice
    resp = await service.client.post("/api/calls/initiate", data="from=x", headers={
        **service.auth(user), "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415
    resp = await service.client.post("/api/calls/initiate", data=b"{not json", headers={
        **service.auth(user), "Content-Type": "application/json"})
    assert resp.status == 400
    resp = await service.client.post("/api/calls/initiate", data=io.BytesIO(b" " * (service.config.server.max_body_bytes + 1)),
                                     headers={**service.auth(user), "Content-Type": "application/json"})
    assert resp.status == 413
    resp = await initiate(service, new_user(), number)
    assert resp.status == 403
