"""The sandbox plays Twilio for the real twilio client: lifecycles, signed callbacks, magic numbers."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from aiohttp import web

from commpro.errors import NotFound, PaymentRequired
from commpro.sandbox import magic
from commpro.twilio_gateway import TwilioError
from tests.conftest import create_call, new_user


async def test_call_lifecycle_posts_signed_callbacks_in_order(service, receiver):
    call = await create_call(service, receiver)
    assert call.sid.startswith("CA") and call.status == "queued"
    seen = [(await receiver.next("/status"))["CallStatus"] for _ in range(2)]
    twiml_request = await receiver.next("/twiml")
    assert twiml_request["CallSid"] == call.sid and twiml_request["CallStatus"] == "in-progress"
    seen += [(await receiver.next("/status"))["CallStatus"] for _ in range(2)]
    assert seen == ["initiated", "ringing", "in-progress", "completed"]
    fetched = await service.twilio.call("calls.fetch", lambda: service.twilio.client.calls(call.sid).fetch_async())
    assert fetched.status == "completed" and fetched.duration == "7"


async def test_completed_callback_carries_duration_and_sequence(service, receiver):
    call = await create_call(service, receiver, events=["completed"])
    form = await receiver.next("/status")
    assert form["CallSid"] == call.sid and form["CallStatus"] == "completed"
    assert form["CallDuration"] == "7" and form["SequenceNumber"] == "0"
    assert form["AccountSid"] == service.config.twilio.account_sid


async def test_invalid_twiml_fails_the_call(service, receiver):
    receiver.twiml = "<Response><Dance/></Response>"
    call = await create_call(service, receiver, events=["completed"])
    form = await receiver.next("/status")
    assert (form["CallSid"], form["CallStatus"], form["ErrorCode"]) == (call.sid, "failed", "12100")


@pytest.mark.parametrize("to, code", [(n, err[1]) for n, err in magic.CALL_TO_ERRORS.items()])
async def test_call_magic_numbers_raise_twilio_codes(service, receiver, to, code):
    with pytest.raises(TwilioError) as info:
        await create_call(service, receiver, to=to)
    assert info.value.twilio_code == code and info.value.status == 422


@pytest.mark.parametrize("to, code", [(n, err[1]) for n, err in magic.MESSAGE_TO_ERRORS.items()])
async def test_message_magic_numbers_raise_twilio_codes(service, to, code):
    client = service.twilio.client
    with pytest.raises(TwilioError) as info:
        await service.twilio.call("messages.create", lambda: client.messages.create_async(
            to=to, from_="+15005550006", body="hi"))
    assert info.value.twilio_code == code


async def test_busy_and_no_answer_callees(service, receiver):
    for number, status in ((magic.BUSY, "busy"), (magic.NO_ANSWER, "no-answer")):
        call = await create_call(service, receiver, to=number, events=["completed"])
        form = await receiver.next("/status")
        assert (form["CallSid"], form["CallStatus"]) == (call.sid, status)


async def test_message_lifecycle_sent_then_delivered(service, receiver):
    client = service.twilio.client
    message = await service.twilio.call("messages.create", lambda: client.messages.create_async(
        to="+33612345678", from_="+15005550006", body="hello", status_callback=receiver.base + "/msg"))
    assert message.sid.startswith("SM") and message.status == "queued" and message.num_segments == "1"
    statuses = [(await receiver.next("/msg"))["MessageStatus"] for _ in range(2)]
    assert statuses == ["sent", "delivered"]
    fetched = await service.twilio.call("messages.fetch", lambda: client.messages(message.sid).fetch_async())
    assert fetched.status == "delivered" and fetched.body == "hello"


async def test_account_out_of_funds_is_402(service, receiver):
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    resp = await service.client.post("/_sandbox/control", json={"account": "suspended"}, headers={"Authorization": auth})
    assert resp.status == 200
    with pytest.raises(TwilioError) as info:
        await create_call(service, receiver)
    assert info.value.status == PaymentRequired.status and info.value.twilio_code == 20005


async def test_wrong_credentials_are_refused_by_the_sandbox(service):
    resp = await service.client.get(
        f"/_sandbox/api/2010-04-01/Accounts/{service.config.twilio.account_sid}/Calls/CA{'0' * 32}.json",
        headers={"Authorization": aiohttp.encode_basic_auth(service.config.twilio.account_sid, "wrong")})
    assert resp.status == 401 and (await resp.json())["code"] == 20003


async def test_unknown_call_is_not_found(service):
    client = service.twilio.client
    with pytest.raises(NotFound):
        await service.twilio.call("calls.fetch", lambda: client.calls("CA" + "0" * 32).fetch_async())


async def test_recording_from_record_verb(service, receiver):
    receiver.twiml = '<Response><Record maxLength="60" action="/recorded"/></Response>'
    call = await create_call(service, receiver, events=["completed"])
    form = await receiver.next("/recorded")
    assert form["CallSid"] == call.sid and form["RecordingSid"].startswith("RE")
    assert form["RecordingDuration"] == "7"
    rec = await service.twilio.call("recordings.fetch", lambda: service.twilio.client.recordings(form["RecordingSid"]).fetch_async())
    assert rec.call_sid == call.sid and rec.duration == "7"
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    async with aiohttp.ClientSession() as session:
        async with session.get(form["RecordingUrl"] + ".wav", headers={"Authorization": auth}) as resp:
            assert resp.status == 200 and resp.content_type == "audio/x-wav"
            assert (await resp.read())[:4] == b"RIFF"


async def test_dial_plays_the_child_leg_and_the_action(service, receiver):
    receiver.twiml = ('<Response><Dial callerId="+15005550006" action="/dialed">'
                      '<Number statusCallback="/leg" statusCallbackEvent="ringing answered completed">'
                      f'{magic.BUSY}</Number></Dial></Response>')
    call = await create_call(service, receiver, events=["completed"])
    leg_statuses = [(await receiver.next("/leg"))["CallStatus"] for _ in range(2)]
    assert leg_statuses == ["ringing", "busy"]
    dialed = await receiver.next("/dialed")
    assert dialed["CallSid"] == call.sid and dialed["DialCallStatus"] == "busy"


async def test_voice_insights_summary(service, receiver):
    call = await create_call(service, receiver, to=magic.POOR_QUALITY, events=["completed"])
    await receiver.next("/status")
    summary = await service.twilio.call("insights.summary", lambda: service.twilio.client.insights.v1.calls(
        call.sid).summary().fetch_async(processing_state="complete"))
    assert summary.call_sid == call.sid and summary.processing_state == "complete"
    inbound = summary.carrier_edge["metrics"]["inbound"]
    assert inbound["jitter"]["avg"] > 30 and inbound["packets_loss_percentage"] > 3
    assert set(summary.tags) == {"high_jitter", "high_packet_loss"}


async def test_simulated_inbound_sms_reaches_the_signed_webhook(service, logs):
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    number = await service.add_number(new_user())
    payload = {"from": "+33612345678", "to": number, "body": "hi there",
               "media": [{"contentType": "image/png", "dataBase64": base64.b64encode(b"\x89PNG fake").decode()}]}
    resp = await service.client.post("/_sandbox/simulate/sms", json=payload, headers={"Authorization": auth})
    assert resp.status == 200
    result = await resp.json()
    assert result["webhook"]["status"] == 200 and "<Response" in result["webhook"]["response"]
    [received] = [r for r in logs.records() if r["event"] == "sms_received"]
    assert received["message_sid"] == result["messageSid"] and received["num_media"] == 1


async def test_deadline_around_every_call(start_service, aiohttp_server):
    """A Twilio that never answers: the gateway gives up at its deadline with a 504."""
    hang = asyncio.Event()

    async def never(request):
        await hang.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", never)
    server = await aiohttp_server(app)
    service = await start_service(TWILIO_API_BASE_URL=str(server.make_url("")).rstrip("/"),
                                  COMMPRO_TWILIO_TIMEOUT_S="0.2")
    from commpro.errors import GatewayTimeout

    with pytest.raises(GatewayTimeout):
        await service.twilio.call("calls.fetch", lambda: service.twilio.client.calls("CA" + "1" * 32).fetch_async())
    hang.set()


async def test_unreachable_twilio_is_503(start_service):
    from aiohttp.test_utils import unused_port

    from commpro.errors import ServiceUnavailable

    service = await start_service(TWILIO_API_BASE_URL=f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(ServiceUnavailable):
        await service.twilio.call("calls.fetch", lambda: service.twilio.client.calls("CA" + "1" * 32).fetch_async())
