"""History, paginations, the state machine under shuffled callbacks, prices, token, numbers,
and user isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commpro.calls import store
from commpro.calls.prices import PRICES
from commpro.jobs import run_due
from commpro.jobs.store import get_job
from tests.conftest import new_user

DEST = "+447911123456"
API_SECRET = "an-api-key-secret-of-32-characters-or-more"


async def make_calls(service, user: str, count: int, direction: str = "outbound") -> list[str]:
    number = await service.add_number(user, identity=user)
    ids = []
    async with service.pool.acquire() as conn:
        numbers = await conn.fetchrow("SELECT id FROM phone_numbers WHERE e164 = $1", number)
        for i in range(count):
            if direction == "outbound":
                row = await store.insert_outbound_call(conn, user, numbers["id"], number, DEST)
                ids.append(str(row["id"]))
            else:
                call_id, _ = await store.insert_inbound_call(conn, user, numbers["id"], "CA" + uuid.uuid4().hex,
                                                             DEST, number)
                ids.append(str(call_id))
    return ids


async def list_calls(service, user, **query) -> tuple[int, dict]:
    resp = await service.client.get("/api/calls", params={k: str(v) for k, v in query.items()},
                                    headers=service.auth(user))
    return resp.status, await resp.json()


async def test_offset_and_cursor_pagination_newest_first(service):
    user = new_user()
    ids = await make_calls(service, user, 7)
    newest_first = ids[::-1]
    _, page = await list_calls(service, user, limit=3)
    assert [c["id"] for c in page["calls"]] == newest_first[:3]
    _, page2 = await list_calls(service, user, limit=3, offset=3)
    assert [c["id"] for c in page2["calls"]] == newest_first[3:6]
    # Keyset: new calls arriving between pages do not shift the next page.
    await make_calls(service, user, 2)
    _, cursor_page = await list_calls(service, user, limit=3, cursor=page["nextCursor"])
    assert [c["id"] for c in cursor_page["calls"]] == newest_first[3:6]
    _, last = await list_calls(service, user, limit=3, cursor=cursor_page["nextCursor"])
    assert [c["id"] for c in last["calls"]] == newest_first[6:] and last["nextCursor"] is None


async def test_filters(service):
    user = new_user()
    outbound = await make_calls(service, user, 2)
    inbound = await make_calls(service, user, 3, direction="inbound")
    _, body = await list_calls(service, user, direction="inbound")
    assert {c["id"] for c in body["calls"]} == set(inbound)
    _, body = await list_calls(service, user, status="initiated")
    assert {c["id"] for c in body["calls"]} == set(outbound)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert len((await list_calls(service, user, since=past))[1]["calls"]) == 5
    assert (await list_calls(service, user, since=future))[1]["calls"] == []
    assert (await list_calls(service, user, until=past))[1]["calls"] == []


@pytest.mark.parametrize("query, field", [
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"limit": "many"}, "limit"),
    ({"offset": -1}, "offset"), ({"direction": "sideways"}, "direction"), ({"status": "dancing"}, "status"),
    ({"since": "yesterday"}, "since"), ({"until": "2026-01-01T00:00:00"}, "until"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"), ({"cursor": "x", "offset": 1}, "cursor"), ({"page": 2}, "page"),
])
async def test_bad_history_queries_name_the_field(service, query, field):
    status, body = await list_calls(service, new_user(), **query)
    assert status == 400 and field in body["error"]["details"]


async def test_user_isolation(service):
    alice, bob = new_user(), new_user()
    [call_id] = await make_calls(service, alice, 1)
    for path in (f"/api/calls/{call_id}", f"/api/calls/{call_id}/recording"):
        resp = await service.client.get(path, headers=service.auth(bob))
        missing = await service.client.get(f"/api/calls/{uuid.uuid4()}", headers=service.auth(bob))
        assert resp.status == missing.status == 404
        assert (await resp.json())["error"] == (await missing.json())["error"]
    assert (await list_calls(service, bob))[1]["calls"] == []
    resp = await service.client.get("/api/calls/not-a-uuid", headers=service.auth(bob))
    assert resp.status == 404


LEG_EVENTS = [("initiated", None), ("ringing", None), ("in-progress", None), ("completed", 42)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(4)), duplicates=st.lists(st.integers(0, 3), max_size=4))
async def test_status_only_moves_forward_whatever_the_order(service, order, duplicates):
    user = new_user()
    [call_id] = await make_calls(service, user, 1)
    leg_sid = "CA" + uuid.uuid4().hex
    ranks = []
    for i in list(order) + duplicates:
        status, duration = LEG_EVENTS[i]
        params = {"CallSid": leg_sid, "CallStatus": status, "SequenceNumber": str(i)}
        if duration is not None:
            params["CallDuration"] = str(duration)
        resp = await service.webhook(f"/webhook/voice/status?callId={call_id}&leg=dial", params)
        assert resp.status == 204
        call = (await (await service.client.get(f"/api/calls/{call_id}", headers=service.auth(user))).json())
        ranks.append(store.STATUS_RANK[call["status"]])
    assert ranks == sorted(ranks), "a status went backwards"
    assert call["status"] == "completed" and call["durationSec"] == 42
    assert call["answeredAt"] is not None and call["endedAt"] is not None


async def test_a_callback_before_the_sid_is_stored_is_matched_by_call_id(service):
    user = new_user()
    [call_id] = await make_calls(service, user, 1)
    first_leg = "CA" + uuid.uuid4().hex
    resp = await service.webhook(f"/webhook/voice/status?callId={call_id}&leg=user",
                                 {"CallSid": first_leg, "CallStatus": "no-answer", "SequenceNumber": "2"})
    assert resp.status == 204
    call = await (await service.client.get(f"/api/calls/{call_id}", headers=service.auth(user))).json()
    assert call["sid"] == first_leg and call["status"] == "no-answer"


async def test_price_is_fetched_after_the_call_and_sums_the_legs(start_service):
    service = await start_service(COMMPRO_SANDBOX_PRICE_AFTER_S="3600")
    user = new_user()
    number = await service.add_number(user, identity=user)
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": DEST},
                                     headers=service.auth(user))
    call_id = (await resp.json())["callId"]
    await service.sandbox_idle()
    later = datetime.now(UTC) + timedelta(minutes=10)
    # Twilio has no price yet: nothing stored, retried later.
    assert await run_due(service.app, PRICES.kind, now=later) == 0
    async with service.pool.acquire() as conn:
        state = await conn.fetchval("SELECT price_state FROM calls WHERE id = $1", uuid.UUID(call_id))
        job = await get_job(conn, PRICES.kind, call_id)
    assert (state, job["state"], job["attempts"]) == ("pending", "pending", 1) and job["run_at"] > later
    await service.sandbox_control(pricesNow=True)
    assert await run_due(service.app, PRICES.kind, now=job["run_at"]) == 1
    call = await (await service.client.get(f"/api/calls/{call_id}", headers=service.auth(user))).json()
    # Two legs of 7 s, each billed one minute at 0.013.
    assert (call["price"], call["priceUnit"]) == ("-0.02600", "USD")
    assert await run_due(service.app, PRICES.kind, now=job["run_at"] + timedelta(days=1)) == 0


async def test_price_gives_up_after_the_window(start_service):
    service = await start_service(COMMPRO_SANDBOX_PRICE_AFTER_S="999999", COMMPRO_PRICES_WINDOW_S="600")
    user = new_user()
    number = await service.add_number(user, identity=user)
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": DEST},
                                     headers=service.auth(user))
    call_id = uuid.UUID((await resp.json())["callId"])
    await service.sandbox_idle()
    now = datetime.now(UTC) + timedelta(minutes=1)
    for _ in range(10):
        await run_due(service.app, PRICES.kind, now=now)
        now += timedelta(hours=1)
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT price_state, price FROM calls WHERE id = $1", call_id)
        job = await get_job(conn, PRICES.kind, str(call_id))
    assert row["price_state"] == "gave_up" and row["price"] is None
    assert job["state"] == "failed" and job["attempts"] <= 3 and "within 600 s" in job["last_error"]


async def test_mobile_token(start_service):
    service = await start_service()
    user = new_user()
    await service.add_number(user, identity="alice-phone")
    resp = await service.client.get("/api/calls/token", headers=service.auth(user))
    assert resp.status == 503 and "TWILIO_API_KEY_SID" in (await resp.json())["error"]["message"]
    service = await start_service(TWILIO_API_KEY_SID="SK" + "1" * 32, TWILIO_API_KEY_SECRET=API_SECRET,
                                  TWILIO_TWIML_APP_SID="AP" + "2" * 32, TWILIO_PUSH_CREDENTIAL_SID="CR" + "3" * 32)
    await service.add_number(user + "x", identity="bob-phone")
    resp = await service.client.get("/api/calls/token", headers=service.auth(user))
    body = await resp.json()
    assert resp.status == 200 and body["identity"] == "alice-phone"
    claims = jwt.decode(body["token"], API_SECRET, algorithms=["HS256"])
    assert claims["iss"] == "SK" + "1" * 32 and claims["sub"] == service.config.twilio.account_sid
    voice = claims["grants"]["voice"]
    assert claims["grants"]["identity"] == "alice-phone"
    assert voice["incoming"] == {"allow": True}
    assert voice["outgoing"]["application_sid"] == "AP" + "2" * 32
    assert voice["push_credential_sid"] == "CR" + "3" * 32
    # A user with no configured identity gets one too (tests/test_calls_app.py).
    resp = await service.client.get("/api/calls/token", headers=service.auth(new_user()))
    assert resp.status == 200


async def test_numbers_list_and_patch(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    resp = await service.client.get("/api/numbers", headers=service.auth(user))
    [entry] = (await resp.json())["numbers"]
    assert entry["number"] == number and entry["routing"] == "forward"
    assert entry["greeting"] == {"text": None, "voice": "Polly.Lea", "language": "fr-FR"}
    patch = {"routing": "voicemail", "ringTimeoutSec": 30, "greetingText": "Laissez un message",
             "greetingLanguage": "en-GB", "blockedNumbers": [DEST], "voicemailOnNoAnswer": False}
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json=patch, headers=service.auth(user))
    assert resp.status == 200
    updated = await resp.json()
    assert (updated["routing"], updated["ringTimeoutSec"], updated["blockedNumbers"]) == ("voicemail", 30, [DEST])
    assert updated["greeting"] == {"text": "Laissez un message", "voice": "Polly.Lea", "language": "en-GB"}
    assert updated["voicemailOnNoAnswer"] is False
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"greetingText": None},
                                      headers=service.auth(user))
    assert (await resp.json())["greeting"]["text"] is None and (await resp.json())["routing"] == "voicemail"
    # Not yours: 404, as for a number that does not exist.
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"routing": "reject"},
                                      headers=service.auth(new_user()))
    assert resp.status == 404


@pytest.mark.parametrize("patch, field", [
    ({"routing": "ring-everyone"}, "routing"), ({"routing": None}, "routing"),
    ({"ringTimeoutSec": 2}, "ringTimeoutSec"), ({"blockedNumbers": ["123"]}, "blockedNumbers"),
    ({"forwardTo": "not a number"}, "forwardTo"), ({"greetingLanguage": "French!"}, "greetingLanguage"),
    ({"greetingText": "x" * 501}, "greetingText"), ({"owner": "me"}, "owner"), ({}, "routing"),
])
async def test_numbers_patch_bad_input(service, patch, field):
    user = new_user()
    await service.add_number(user)
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json=patch, headers=service.auth(user))
    assert resp.status == 400 and field in (await resp.json())["error"]["details"]
