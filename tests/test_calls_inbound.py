"""Inbound calls through the sandbox: each routing choice, voicemail, recordings, app calls."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest

from commpro.sandbox import magic
from tests.conftest import fresh_number, new_user

CALLER = "+447911123456"


async def calls_of(service, user) -> list[dict]:
    resp = await service.client.get("/api/calls", headers=service.auth(user))
    assert resp.status == 200
    return (await resp.json())["calls"]


def parse(twiml: str) -> ET.Element:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return root


async def test_forward_rings_app_and_phone_and_records_the_call(service):
    user = new_user()
    phone = fresh_number()
    number = await service.add_number(user, identity=user, forward_to=phone, ring_timeout_s=25,
                                      greeting_text="Bienvenue")
    result = await service.simulate_call(CALLER, number)
    assert result["webhook"]["status"] == 200
    root = parse(result["webhook"]["response"])
    say, dial = list(root)
    assert say.tag == "Say" and say.text == "Bienvenue" and say.get("language") == "fr-FR"
    assert dial.tag == "Dial" and dial.get("timeout") == "25"
    assert urlsplit(dial.get("action")).path == "/webhook/voice/completed"
    assert [(n.tag, n.text) for n in dial] == [("Client", user), ("Number", phone)]
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    assert (call["direction"], call["from"], call["to"], call["sid"]) == ("inbound", CALLER, number, result["callSid"])
    assert uuid.UUID(call["id"]).version == 7  # time-ordered (commpro/ids.py)
    assert call["status"] == "completed" and call["answeredAt"] and call["durationSec"] == 7
    assert call["voicemail"] is None


async def test_voicemail_routing_records_a_voicemail(service):
    user = new_user()
    number = await service.add_number(user, identity=user, routing="voicemail")
    result = await service.simulate_call(CALLER, number)
    root = parse(result["webhook"]["response"])
    assert [v.tag for v in root] == ["Say", "Record", "Hangup"]
    record = root.find("Record")
    assert record.get("maxLength") == "60"
    assert urlsplit(record.get("action")).path == "/webhook/voice/recording"
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    assert call["voicemail"] is not None
    assert call["recording"] == {"url": f"/api/calls/{call['id']}/recording", "durationSec": 7}


@pytest.mark.parametrize("how", ["routing", "blocked"])
async def test_reject_routing_and_blocked_callers_are_rejected(service, how):
    user = new_user()
    settings = {"routing": "reject"} if how == "routing" else {"blocked_numbers": [CALLER]}
    number = await service.add_number(user, identity=user, **settings)
    root = parse((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [v.tag for v in root] == ["Reject"]
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    assert call["status"] == "busy" and call["answeredAt"] is None
    if how == "blocked":  # another caller still gets through
        root = parse((await service.simulate_call("+447911123457", number))["webhook"]["response"])
        assert root.find("Dial") is not None


async def test_unknown_number_says_so_and_hangs_up(service):
    result = await service.simulate_call(CALLER, fresh_number())
    assert result["webhook"]["status"] == 200
    root = parse(result["webhook"]["response"])
    assert [v.tag for v in root] == ["Say", "Hangup"]
    await service.sandbox_idle()
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE sid = $1", result["callSid"]) == 0


async def test_voicemail_after_no_answer(service):
    user = new_user()
    number = await service.add_number(user, forward_to=magic.NO_ANSWER)
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    assert call["voicemail"] is not None and call["recording"]["durationSec"] == 7
    assert call["answeredAt"] is None


async def test_no_voicemail_when_turned_off(service):
    user = new_user()
    number = await service.add_number(user, forward_to=magic.BUSY, voicemail_on_no_answer=False)
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    assert call["voicemail"] is None and call["recording"] is None


async def test_dial_action_twiml(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    base = {"CallSid": "CA" + "1" * 32, "To": number, "From": CALLER}
    resp = await service.webhook("/webhook/voice/completed", {**base, "DialCallStatus": "completed"})
    assert [v.tag for v in parse(await resp.text())] == ["Hangup"]
    await service.webhook("/webhook/voice", base)
    for status in ("no-answer", "busy", "failed"):
        resp = await service.webhook("/webhook/voice/completed", {**base, "DialCallStatus": status})
        assert [v.tag for v in parse(await resp.text())] == ["Say", "Record", "Hangup"], status


async def test_recording_is_streamed_without_twilio_urls(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    [call] = await calls_of(service, user)
    resp = await service.client.get(call["recording"]["url"], headers=service.auth(user))
    assert resp.status == 200 and resp.content_type == "audio/x-wav"
    audio = await resp.read()
    assert audio[:4] == b"RIFF" and len(audio) > 8000 * 7
    assert not any("twilio" in v.lower() or "sandbox" in v.lower() for v in resp.headers.values())
    assert "RE" not in (await (await service.client.get(f"/api/calls/{call['id']}", headers=service.auth(user))).text())
    resp = await service.client.get(call["recording"]["url"], headers=service.auth(new_user()))
    assert resp.status == 404
    resp = await service.client.get(call["recording"]["url"] + "?format=ogg", headers=service.auth(user))
    assert resp.status == 400


async def test_inbound_webhook_retries_insert_once(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    params = {"CallSid": "CA" + "2" * 32, "From": CALLER, "To": number}
    for _ in range(3):
        assert (await service.webhook("/webhook/voice", params)).status == 200
    assert len(await calls_of(service, user)) == 1


async def test_app_call_through_the_twiml_app(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    other_number = await service.add_number(new_user(), identity="someone-else")
    base = {"CallSid": "CA" + "3" * 32, "From": f"client:{user}", "To": "+447911123456"}
    resp = await service.webhook("/webhook/voice/outbound", {**base, "CallerId": number})
    dial = parse(await resp.text()).find("Dial")
    assert dial.get("callerId") == number and dial.find("Number").text == "+447911123456"
    status_url = urlsplit(dial.find("Number").get("statusCallback"))
    assert status_url.path == "/webhook/voice/status" and parse_qs(status_url.query)["leg"] == ["dial"]
    [call] = await calls_of(service, user)
    assert (call["direction"], call["from"], call["sid"]) == ("outbound", number, base["CallSid"])
    # Somebody else's number as caller id: refused, nothing recorded.
    refused = await service.webhook("/webhook/voice/outbound", {**base, "CallSid": "CA" + "4" * 32,
                                                                  "CallerId": other_number})
    assert [v.tag for v in parse(await refused.text())] == ["Say", "Hangup"]
    assert len(await calls_of(service, user)) == 1


async def test_webhooks_missing_fields_are_400_and_write_nothing(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    for path, params in [
        ("/webhook/voice", {"From": CALLER, "To": number}),
        ("/webhook/voice/status", {"CallSid": "CA" + "5" * 32}),
        ("/webhook/voice/recording", {"CallSid": "CA" + "5" * 32, "RecordingSid": "RE" + "1" * 32}),
        ("/webhook/voice/completed", {"CallSid": "CA" + "5" * 32, "To": number}),
    ]:
        resp = await service.webhook(path, params)
        assert resp.status == 400, path
        assert (await resp.json())["error"]["code"] == "validation_failed"
    assert await calls_of(service, user) == []


async def test_status_for_unknown_call_creates_nothing(service, logs):
    resp = await service.webhook("/webhook/voice/status", {"CallSid": "CA" + "6" * 32, "CallStatus": "completed"})
    assert resp.status == 204
    assert any(r["event"] == "status_for_unknown_call" for r in logs.records())
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE sid = $1", "CA" + "6" * 32) == 0
