"""The sandbox remembers: its records live in the service's PostgreSQL (schema `sandbox`, its
own), so a restarted service still finds the recordings, prices, summaries and media of earlier
calls and messages, and two processes on one database answer for each other's calls. Asked the
way CommPro asks Twilio: the real twilio client (the service's own) and its media download."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from commpro.sandbox import store
from commpro.sandbox.state import API_VERSION
from tests.conftest import new_user
from tests.test_calls_outbound import initiate
from tests.test_calls_recording import CALLER, recorded_number
from tests.test_erasure import simulate_sms
from tests.test_messages_media import PNG, mms_form, send_mms

# Twilio prices a call an hour after it ends here: only pricesNow brings the price.
PRICED_LATER = {"COMMPRO_SANDBOX_PRICE_AFTER_S": "3600"}


async def read_media(service, url: str) -> tuple[str, bytes]:
    resp = await service.twilio.open_media(url)
    try:
        return resp.content_type, await resp.read()
    finally:
        resp.release()


def media_url(service, message_sid: str, media_sid: str) -> str:
    twilio = service.config.twilio
    return f"{twilio.api_base_url}/{API_VERSION}/Accounts/{twilio.account_sid}/Messages/{message_sid}/Media/{media_sid}"


def recording_url(service, recording_sid: str) -> str:
    twilio = service.config.twilio
    return f"{twilio.api_base_url}/{API_VERSION}/Accounts/{twilio.account_sid}/Recordings/{recording_sid}"


async def test_a_restart_keeps_recordings_prices_summaries_and_media(start_service, make_config):
    first = await start_service(**PRICED_LATER)
    user = new_user()
    number = await recorded_number(first, user)
    call_sid = (await first.simulate_call(CALLER, number))["callSid"]
    mms_sid = await simulate_sms(first, number, "photo", media=PNG)
    # And what the service itself asked "Twilio" for: a call and an MMS.
    placed = await initiate(first, user, number)
    assert placed.status == 201
    placed_sid = (await placed.json())["sid"]
    sent = await send_mms(first, user, mms_form(number, [(PNG, "a.png", "image/png")]))
    assert sent.status == 201
    sent_sid = (await sent.json())["sid"]
    await first.sandbox_idle()
    [leg] = await first.sandbox.child_calls(placed_sid)
    [recording] = await first.sandbox.recordings_of(call_sid)
    assert (await first.twilio.client.calls(call_sid).fetch_async()).price is None  # not priced yet
    port = first.config.server.port
    await first.client.close()  # the service and its sandbox stop

    # As `make run` again: the same database, data dir and port.
    second = await start_service(config=make_config(port=port, **PRICED_LATER))
    client = second.twilio.client
    call = await client.calls(call_sid).fetch_async()
    assert (call.status, call.duration, call.direction) == ("completed", "7", "inbound")
    assert call.price is None  # its price time was kept, not restarted
    await second.sandbox_control(pricesNow=True)
    assert (await client.calls(call_sid).fetch_async()).price == "-0.01300"
    # The recording, at Twilio and through our API, which streams it from Twilio.
    fetched = await client.recordings(recording.sid).fetch_async()
    assert (fetched.call_sid, fetched.duration, fetched.channels) == (call_sid, "7", 2)
    calls = (await (await second.client.get("/api/calls", headers=second.auth(user))).json())["calls"]
    [mine] = [c for c in calls if c["sid"] == call_sid]
    wav = await second.client.get(mine["recording"]["url"], headers=second.auth(user))
    assert wav.status == 200 and (await wav.read())[:4] == b"RIFF"
    # Voice Insights still has the call's summary.
    summary = await client.insights.v1.calls(call_sid).summary().fetch_async(processing_state="complete")
    assert (summary.call_sid, summary.processing_state, summary.duration) == (call_sid, "complete", 7)
    # The MMS and its media, bytes and type.
    message = await client.messages(mms_sid).fetch_async()
    assert (message.body, message.num_media, message.status) == ("photo", "1", "received")
    assert message.price == "-0.00790"
    [media] = await client.messages(mms_sid).media.list_async()
    assert await read_media(second, media_url(second, mms_sid, media.sid)) == ("image/png", PNG)
    # The service's own call, both its legs priced, and its MMS, delivered and priced.
    for sid in (placed_sid, leg.sid):
        placed_call = await client.calls(sid).fetch_async()
        assert (placed_call.status, placed_call.price) == ("completed", "-0.01300")
    assert (await client.calls(leg.sid).fetch_async()).parent_call_sid == placed_sid
    sent_message = await client.messages(sent_sid).fetch_async()
    assert (sent_message.status, sent_message.num_media, sent_message.price) == ("delivered", "1", "-0.00790")


async def test_two_processes_on_one_database_share_one_sandbox(start_service, make_config):
    a = await start_service(**PRICED_LATER)
    b = await start_service(config=make_config(**PRICED_LATER))
    assert a.config.twilio.api_base_url != b.config.twilio.api_base_url
    user = new_user()
    number = await recorded_number(a, user)
    call_sid = (await a.simulate_call(CALLER, number))["callSid"]
    mms_sid = await simulate_sms(a, number, "photo", media=PNG)
    await a.sandbox_idle()
    assert not b.sandbox.tasks  # A plays the call; B only answers for it
    client = b.twilio.client
    call = await client.calls(call_sid).fetch_async()
    assert (call.status, call.duration, call.price) == ("completed", "7", None)
    await b.sandbox_control(pricesNow=True)  # B's control prices A's call, for A too
    assert (await client.calls(call_sid).fetch_async()).price == "-0.01300"
    assert (await a.twilio.client.calls(call_sid).fetch_async()).price == "-0.01300"
    summary = await client.insights.v1.calls(call_sid).summary().fetch_async(processing_state="complete")
    assert (summary.call_sid, summary.duration) == (call_sid, 7)
    [recording] = await b.sandbox.recordings_of(call_sid)
    assert (await client.recordings(recording.sid).fetch_async()).duration == "7"
    content_type, audio = await read_media(b, recording_url(b, recording.sid))
    assert content_type == "audio/x-wav" and audio[:4] == b"RIFF"
    [media] = await client.messages(mms_sid).media.list_async()
    assert await read_media(b, media_url(b, mms_sid, media.sid)) == ("image/png", PNG)
    # A deletion through B is a deletion for A.
    assert await client.recordings(recording.sid).delete_async() is True
    assert await a.sandbox.recording(recording.sid) is None
    resp = await a.client.get(f"/_sandbox/api/{API_VERSION}/Accounts/{a.config.twilio.account_sid}"
                              f"/Recordings/{recording.sid}.json", headers=basic_auth(a))
    assert resp.status == 404 and (await resp.json())["code"] == 20404


async def test_another_accounts_records_are_not_found_nor_forgotten(start_service, make_config, tmp_path):
    a = await start_service()
    user = new_user()
    number = await a.add_number(user)
    mms_sid = await simulate_sms(a, number, "photo", media=PNG)
    # Another data dir: other generated credentials, so another Twilio account on the same database.
    other = await start_service(config=make_config(COMMPRO_APP_DATA_DIR=str(tmp_path / "other")))
    assert other.config.twilio.account_sid != a.config.twilio.account_sid
    assert await other.sandbox.message(mms_sid) is None
    resp = await other.client.get(f"/_sandbox/api/{API_VERSION}/Accounts/{other.config.twilio.account_sid}"
                                  f"/Messages/{mms_sid}.json", headers=basic_auth(other))
    assert resp.status == 404
    assert (await a.sandbox.message(mms_sid)).body == "photo"
    # Forgetting is per account too: the other's forget leaves A's records, A's own removes them.
    await other.sandbox_control(forget=True)
    assert (await a.sandbox.message(mms_sid)).body == "photo"
    [media] = (await a.sandbox.message(mms_sid)).media
    await a.sandbox_control(forget=True)
    assert await a.sandbox.message(mms_sid) is None and await a.sandbox.media(media.sid) is None


def basic_auth(service) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(service.config.twilio.account_sid,
                                                        service.config.twilio.auth_token)}


async def test_the_schema_is_created_once_by_sandboxes_starting_together(empty_database_url):
    conns = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        found = await asyncio.gather(*(store.ensure_schema(conn) for conn in conns))
        # None failed on tables another was creating; the first found nothing at all.
        assert 0 in found and set(found) <= {0, store.SCHEMA_VERSION}
        assert await conns[0].fetch("SELECT version FROM sandbox.meta") == [(store.SCHEMA_VERSION,)]
        assert await store.ensure_schema(conns[1]) == store.SCHEMA_VERSION  # up to date: nothing to do
        # An older version is brought up to date by the steps after it.
        await conns[0].execute("UPDATE sandbox.meta SET version = 0")
        assert await store.ensure_schema(conns[2]) == 0
        assert await conns[0].fetchval("SELECT version FROM sandbox.meta") == store.SCHEMA_VERSION
    finally:
        for conn in conns:
            await conn.close()
