"""Call screening and every leg of a call: key pressed, no key, a machine answering, the caller
hanging up during the whisper, two legs answering at once, prices and quality per leg."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from commpro.calls.prices import PRICES
from commpro.jobs import run_due
from commpro.quality.poller import VOICE_INSIGHTS
from commpro.sandbox import magic
from tests.conftest import fresh_number, new_user

CALLER = "+447911123456"
DEST = "+447911123457"


async def only_call(service, user) -> dict:
    resp = await service.client.get("/api/calls", headers=service.auth(user))
    [call] = (await resp.json())["calls"]
    return call


def tags(twiml: str) -> list[str]:
    return [v.tag for v in ET.fromstring(twiml)]


async def legs_of(service, call_id) -> dict[str, dict]:
    async with service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM call_legs WHERE call_id = $1::uuid", call_id)
    return {r["sid"]: dict(r) for r in rows}


async def test_phone_leg_is_screened_and_the_key_connects_it(service):
    user, phone = new_user(), fresh_number()
    number = await service.add_number(user, identity=user, forward_to=phone)
    result = await service.simulate_call(CALLER, number)
    dial = ET.fromstring(result["webhook"]["response"]).find("Dial")
    assert dial.get("answerOnBridge") == "true"
    client, phone_noun = list(dial)
    assert client.get("url") is None, "app legs are never screened"
    assert urlsplit(phone_noun.get("url")).path == "/webhook/voice/screen"
    # The whisper itself: the caller's number, one key, hang up without it.
    screen = await service.webhook(urlsplit(phone_noun.get("url")).path + "?" + urlsplit(phone_noun.get("url")).query,
                                   {"CallSid": "CA" + uuid.uuid4().hex, "To": phone})
    root = ET.fromstring(await screen.text())
    assert [v.tag for v in root] == ["Gather", "Hangup"]
    gather = root.find("Gather")
    assert gather.get("numDigits") == "1" and "4 4 7 9 1 1 1 2 3 4 5 6" in gather.find("Say").text
    assert urlsplit(gather.get("action")).path == "/webhook/voice/screen/result"
    await service.sandbox_idle()


async def test_a_person_pressing_1_takes_the_call_on_the_phone(service):
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["answeredBy"] == "phone" and call["answeredAt"] and call["voicemail"] is None
    [leg] = (await legs_of(service, call["id"])).values()
    assert leg["device"] == "phone" and leg["accepted_at"] is not None and leg["status"] == "completed"


@pytest.mark.parametrize("phone", [magic.MACHINE, magic.DECLINES], ids=["machine-no-key", "wrong-key"])
async def test_a_machine_or_no_key_sends_the_caller_to_voicemail(service, phone):
    user = new_user()
    number = await service.add_number(user, forward_to=phone)
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    # Twilio said DialCallStatus=completed: acceptance, not the status, decided.
    assert call["voicemail"] is not None and call["recording"] is not None
    assert call["answeredBy"] is None and call["answeredAt"] is None


async def test_dial_action_without_acceptance_is_voicemail_even_if_completed(service):
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    sid = "CA" + uuid.uuid4().hex
    resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    action = urlsplit(ET.fromstring(await resp.text()).find("Dial").get("action"))
    assert parse_qs(action.query)["screened"] == ["1"]
    params = {"CallSid": sid, "From": CALLER, "To": number, "DialCallStatus": "completed",
              "DialCallSid": "CA" + uuid.uuid4().hex}
    resp = await service.webhook(f"{action.path}?{action.query}", params)
    assert tags(await resp.text()) == ["Say", "Record", "Hangup"]


async def test_screening_off_trusts_the_dial_status(service):
    user = new_user()
    number = await service.add_number(user, forward_to=magic.MACHINE, screening=False)
    result = await service.simulate_call(CALLER, number)
    assert ET.fromstring(result["webhook"]["response"]).find("Dial/Number").get("url") is None
    await service.sandbox_idle()
    call = await only_call(service, user)
    # Without screening the carrier voicemail "answered": exactly what screening is for.
    assert call["answeredBy"] == "phone" and call["voicemail"] is None


async def test_caller_hanging_up_during_screening_connects_nobody(service):
    user, phone = new_user(), fresh_number()
    number = await service.add_number(user, forward_to=phone)
    sid, leg_sid = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    url = urlsplit(ET.fromstring(await resp.text()).find("Dial/Number").get("url"))
    call_id = parse_qs(url.query)["callId"][0]
    screen = await service.webhook(f"{url.path}?{url.query}", {"CallSid": leg_sid, "To": phone})
    result = urlsplit(ET.fromstring(await screen.text()).find("Gather").get("action"))
    # The caller hangs up while the user hears the whisper...
    await service.webhook("/webhook/voice/status", {"CallSid": sid, "CallStatus": "completed", "CallDuration": "9"})
    # ...then presses 1: that leg is hung up, not connected to silence.
    resp = await service.webhook(f"{result.path}?{result.query}", {"CallSid": leg_sid, "To": phone, "Digits": "1"})
    assert tags(await resp.text()) == ["Hangup"]
    # A whisper fetched after the caller left hangs up at once.
    late = await service.webhook(f"{url.path}?{url.query}", {"CallSid": "CA" + uuid.uuid4().hex, "To": phone})
    assert tags(await late.text()) == ["Hangup"]
    call = await only_call(service, user)
    assert call["id"] == call_id and call["answeredBy"] is None and call["answeredAt"] is None


async def test_screen_webhooks_refuse_bad_input(service):
    for path in ("/webhook/voice/screen/result?callId=nope", "/webhook/voice/screen?callId=nope"):
        resp = await service.webhook(path, {"CallSid": "CA" + "1" * 32, "Digits": "1"})
        assert resp.status == 400
    resp = await service.webhook("/webhook/voice/screen/result", {"Digits": "1"})
    assert resp.status == 400
    # An unknown call: hang the leg up, write nothing.
    resp = await service.webhook(f"/webhook/voice/screen/result?callId={uuid.uuid4()}",
                                 {"CallSid": "CA" + "1" * 32, "Digits": "1"})
    assert resp.status == 200 and tags(await resp.text()) == ["Hangup"]


async def test_both_legs_answering_at_once_one_takes_the_call(service):
    winners = set()
    for _ in range(6):
        user, phone = new_user(), fresh_number()
        number = await service.add_number(user, identity=user, forward_to=phone)
        sid = "CA" + uuid.uuid4().hex
        resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
        dial = ET.fromstring(await resp.text()).find("Dial")
        app_status = urlsplit(dial.find("Client").get("statusCallback"))
        phone_url = urlsplit(dial.find("Number").get("url"))
        call_id = parse_qs(phone_url.query)["callId"][0]
        app_sid, phone_sid = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
        app_answer, phone_key = await asyncio.gather(
            service.webhook(f"{app_status.path}?{app_status.query}",
                            {"CallSid": app_sid, "CallStatus": "in-progress", "To": f"client:{user}",
                             "SequenceNumber": "2"}),
            service.webhook(f"/webhook/voice/screen/result?callId={call_id}",
                            {"CallSid": phone_sid, "To": phone, "Digits": "1"}))
        assert app_answer.status == 204
        phone_connected = tags(await phone_key.text()) == []
        call = await only_call(service, user)
        assert call["answeredBy"] == ("phone" if phone_connected else "app")
        legs = await legs_of(service, call_id)
        assert legs[app_sid]["device"] == "app" and legs[phone_sid]["device"] == "phone"
        winners.add(call["answeredBy"])
        # The Dial action then hangs up: the call was taken.
        resp = await service.webhook(f"/webhook/voice/completed?callId={call_id}&screened=1",
                                     {"CallSid": sid, "To": number, "DialCallStatus": "completed"})
        assert tags(await resp.text()) == ["Hangup"]
    assert winners <= {"app", "phone"}


async def test_every_billed_leg_is_priced_whichever_reported_first(service):
    user, phone = new_user(), fresh_number()
    number = await service.add_number(user, identity=user, forward_to=phone, screening=False)
    sid = "CA" + uuid.uuid4().hex
    resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    dial = ET.fromstring(await resp.text()).find("Dial")
    app_status = urlsplit(dial.find("Client").get("statusCallback"))
    phone_status = urlsplit(dial.find("Number").get("statusCallback"))
    app_sid, phone_sid = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    # The app leg reports first (ringing, then canceled): the phone took the call.
    for path, leg_sid, status, seq in [(app_status, app_sid, "ringing", 1), (phone_status, phone_sid, "ringing", 1),
                                       (phone_status, phone_sid, "in-progress", 2),
                                       (app_status, app_sid, "canceled", 3),
                                       (phone_status, phone_sid, "completed", 3)]:
        params = {"CallSid": leg_sid, "CallStatus": status, "SequenceNumber": str(seq), "CallDuration": "61"}
        assert (await service.webhook(f"{path.path}?{path.query}", params)).status == 204
    await service.webhook("/webhook/voice/status", {"CallSid": sid, "CallStatus": "completed", "CallDuration": "65"})
    call = await only_call(service, user)
    assert call["answeredBy"] == "phone"
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, price_next_at FROM calls WHERE sid = $1", sid)
        # What the price job will ask Twilio for: the call and its billed leg, not the canceled one.
        due = await conn.fetchval("""SELECT ARRAY[sid] || ARRAY(SELECT l.sid FROM call_legs l
                                     WHERE l.call_id = calls.id AND l.status = 'completed') FROM calls WHERE id = $1""",
                                  row["id"])
    assert due == [sid, phone_sid]


async def test_inbound_price_sums_the_parent_and_the_answered_leg(service):
    user = new_user()
    number = await service.add_number(user, identity=user, forward_to=fresh_number())
    result = await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["answeredBy"] == "app"
    legs = await legs_of(service, call["id"])
    assert sorted(leg["device"] for leg in legs.values()) == ["app", "phone"]
    phone_leg = next(s for s, leg in legs.items() if leg["device"] == "phone")
    assert legs[phone_leg]["status"] == "canceled"
    await service.sandbox_control(pricesNow=True)
    for _ in range(3):
        # Its price job, due a while after the call: run it now (a round a day ahead).
        await run_due(service.app, PRICES.kind, now=datetime.now(UTC) + timedelta(days=1))
        call = await only_call(service, user)
        if call["price"] is not None:
            break
    # The caller's leg and the app leg, 7 s each, a started minute at 0.013 each.
    assert call["price"] == "-0.02600"
    assert service.sandbox.call_fetches.get(phone_leg, 0) == 0, "a canceled leg is not billed"
    assert service.sandbox.call_fetches[result["callSid"]] >= 1


async def test_quality_of_an_inbound_call_answered_in_the_app_is_the_app_leg(start_service):
    service = await start_service(COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0")
    user = new_user()
    number = await service.add_number(user, identity="poor-" + user)
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    async with service.pool.acquire() as conn:
        due_at = await conn.fetchval("SELECT run_at FROM jobs WHERE kind = $1 AND key = $2", VOICE_INSIGHTS,
                                     call["id"])
    await run_due(service.app, VOICE_INSIGHTS, due_at + timedelta(seconds=1))
    resp = await service.client.get(f"/api/calls/{call['id']}/quality", headers=service.auth(user))
    q = await resp.json()
    assert (q["edge"], q["mos"]) == ("sdk_edge", 2.8)


async def test_outbound_first_leg_is_screened_before_dialling(service):
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": DEST},
                                     headers=service.auth(user))
    body = await resp.json()
    assert resp.status == 201, body
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["answeredBy"] == "phone" and call["status"] == "completed"
    assert [c.to for c in await service.sandbox.child_calls(body["sid"])] == [DEST]


async def test_outbound_first_leg_answered_by_a_machine_never_dials_the_destination(service):
    user = new_user()
    number = await service.add_number(user, forward_to=magic.MACHINE)
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": DEST},
                                     headers=service.auth(user))
    body = await resp.json()
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["status"] == "no-answer" and call["answeredBy"] is None and call["answeredAt"] is None
    assert await service.sandbox.child_calls(body["sid"]) == []


async def test_outbound_accept_needs_the_key(service):
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    async with service.pool.acquire() as conn:
        number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
        call_id = await conn.fetchval("""INSERT INTO calls (user_id, phone_number_id, direction, from_number,
                                         to_number, status, status_rank) VALUES ($1, $2, 'outbound', $3, $4,
                                         'initiated', 0) RETURNING id""", user, number_id, number, DEST)
    first = await service.webhook(f"/webhook/voice/outbound?callId={call_id}&screen=1",
                                  {"CallSid": "CA" + uuid.uuid4().hex, "From": number, "To": "+33600000000"})
    assert tags(await first.text()) == ["Gather", "Hangup"]
    path = f"/webhook/voice/outbound/accept?callId={call_id}"
    assert tags(await (await service.webhook(path, {"CallSid": "CA" + "9" * 32, "Digits": "5"})).text()) == ["Hangup"]
    resp = await service.webhook(path, {"CallSid": "CA" + "9" * 32, "Digits": "1"})
    dial = ET.fromstring(await resp.text()).find("Dial")
    assert dial.find("Number").text == DEST and dial.get("callerId") == number
    assert (await only_call(service, user))["answeredBy"] == "phone"


async def test_screening_is_a_number_setting(service):
    user = new_user()
    await service.add_number(user, forward_to=fresh_number())
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    assert entry["screening"] is True
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"screening": False},
                                      headers=service.auth(user))
    assert resp.status == 200 and (await resp.json())["screening"] is False
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"screening": "yes"},
                                      headers=service.auth(user))
    assert resp.status == 400 and "screening" in (await resp.json())["error"]["details"]


async def test_a_webhook_naming_only_a_later_legs_sid_finds_its_call(service):
    user = new_user()
    number = await service.add_number(user, identity=user, forward_to=fresh_number(), screening=False)
    sid = "CA" + uuid.uuid4().hex
    resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    dial = ET.fromstring(await resp.text()).find("Dial")
    first, second = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    for noun, leg_sid in ((dial.find("Client"), first), (dial.find("Number"), second)):
        url = urlsplit(noun.get("statusCallback"))
        await service.webhook(f"{url.path}?{url.query}", {"CallSid": leg_sid, "CallStatus": "ringing",
                                                          "SequenceNumber": "1"})
    # A voicemail recording reported for the second leg, with no callId: still this call's.
    resp = await service.webhook("/webhook/voice/recording", {"CallSid": second, "RecordingSid": "RE" + "7" * 32,
                                                              "RecordingUrl": "https://api.twilio.com/r",
                                                              "RecordingDuration": "3"})
    assert resp.status == 200
    assert (await only_call(service, user))["recording"]["durationSec"] == 3
