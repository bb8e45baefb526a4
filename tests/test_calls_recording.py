"""Call recording, opt-in per number: the consent announcement, <Dial record>, the status
callback, the audio as WAV or real MP3, and deletion here and at Twilio."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

from commpro.sandbox.audio import MP3_FRAME_BYTES
from tests.conftest import fresh_number, new_user

CALLER = "+447911123456"


async def only_call(service, user) -> dict:
    resp = await service.client.get("/api/calls", headers=service.auth(user))
    [call] = (await resp.json())["calls"]
    return call


async def recorded_number(service, user, **patch) -> str:
    number = await service.add_number(user, forward_to=fresh_number())
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    assert entry["recordCalls"] is False and entry["recordingAnnouncement"] == "Cet appel est enregistré."
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"recordCalls": True, **patch},
                                      headers=service.auth(user))
    assert resp.status == 200 and (await resp.json())["recordCalls"] is True
    return number


def mp3_frames(data: bytes) -> int:
    """Walk the MPEG audio frames from the first byte to the last; fail on anything else."""
    frames, i = 0, 0
    while i < len(data):
        header = int.from_bytes(data[i:i + 4], "big")
        assert header >> 21 == 0x7FF, f"no frame sync at byte {i}"
        assert (header >> 19) & 3 == 3 and (header >> 17) & 3 == 1, "not MPEG-1 Layer III"
        bitrate = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320][(header >> 12) & 0xF] * 1000
        rate = [44100, 48000, 32000][(header >> 10) & 3]
        i += 144 * bitrate // rate + ((header >> 9) & 1)
        frames += 1
    assert i == len(data)
    return frames


async def test_inbound_call_is_recorded_dual_channel_after_the_announcement(service):
    user = new_user()
    number = await recorded_number(service, user, recordingAnnouncement="Appel enregistré pour la qualité.")
    result = await service.simulate_call(CALLER, number)
    root = ET.fromstring(result["webhook"]["response"])
    say, dial = list(root)
    assert say.text == "Appel enregistré pour la qualité."
    assert dial.get("record") == "record-from-answer-dual"
    assert urlsplit(dial.get("recordingStatusCallback")).path == "/webhook/voice/recording/status"
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["recording"] == {"url": f"/api/calls/{call['id']}/recording", "durationSec": 7}
    assert call["voicemail"] is None
    [rec] = await service.sandbox.recordings_of(result["callSid"])
    assert (rec.channels, rec.source) == (2, "DialVerb")
    wav = await service.client.get(call["recording"]["url"], headers=service.auth(user))
    assert wav.content_type == "audio/x-wav" and (await wav.read())[:4] == b"RIFF"
    mp3 = await service.client.get(call["recording"]["url"] + "?format=mp3", headers=service.auth(user))
    assert mp3.status == 200 and mp3.content_type == "audio/mpeg"
    data = await mp3.read()
    assert len(data) % MP3_FRAME_BYTES == 0 and mp3_frames(data) * 1152 / 32000 >= 7


async def test_outbound_call_is_recorded_and_the_destination_hears_the_announcement(service):
    user = new_user()
    number = await recorded_number(service, user)
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": CALLER},
                                     headers=service.auth(user))
    call_id = (await resp.json())["callId"]
    # What the destination's <Number url> plays when it answers.
    announce = await service.webhook(f"/webhook/voice/announce?callId={call_id}", {"CallSid": "CA" + "1" * 32})
    assert ET.fromstring(await announce.text()).find("Say").text == "Cet appel est enregistré."
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["recording"]["durationSec"] == 7


async def test_a_number_that_does_not_record_has_no_record_attribute(service):
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    result = await service.simulate_call(CALLER, number)
    dial = ET.fromstring(result["webhook"]["response"]).find("Dial")
    assert dial.get("record") is None and dial.get("recordingStatusCallback") is None
    await service.sandbox_idle()
    assert (await only_call(service, user))["recording"] is None


async def test_deleting_a_recording_deletes_twilios_copy(service):
    user = new_user()
    number = await recorded_number(service, user)
    result = await service.simulate_call(CALLER, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    [sid] = [r.sid for r in await service.sandbox.recordings_of(result["callSid"])]
    url = service.app.router["delete_call_recording"].url_for(id=call["id"])
    # Somebody else's call: 404, and Twilio's copy untouched.
    assert (await service.client.delete(url, headers=service.auth(new_user()))).status == 404
    assert await service.sandbox.recording(sid) is not None
    assert (await service.client.delete(url, headers=service.auth(user))).status == 204
    assert sid in service.sandbox.deleted_recordings and await service.sandbox.recording(sid) is None
    assert (await only_call(service, user))["recording"] is None
    assert (await service.client.get(call["recording"]["url"], headers=service.auth(user))).status == 404
    assert (await service.client.delete(url, headers=service.auth(user))).status == 404
    # A late retry of the status callback does not bring it back.
    resp = await service.webhook(f"/webhook/voice/recording/status?callId={call['id']}",
                                 {"CallSid": result["callSid"], "RecordingSid": sid, "RecordingStatus": "completed",
                                  "RecordingUrl": "https://api.twilio.com/x", "RecordingDuration": "7"})
    assert resp.status == 204 and (await only_call(service, user))["recording"] is None


async def test_a_voicemail_gone_at_twilio_is_still_deleted_here(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    call_sid = (await service.simulate_call(CALLER, number))["callSid"]
    await service.sandbox_idle()
    call = await only_call(service, user)
    for rec in await service.sandbox.recordings_of(call_sid):  # Twilio lost it already (deleted in its console)
        assert await service.sandbox.delete_recording(rec.sid)
    resp = await service.client.delete(f"/api/calls/{call['id']}/recording", headers=service.auth(user))
    assert resp.status == 204 and (await only_call(service, user))["recording"] is None


async def test_recording_status_callbacks(service):
    user = new_user()
    number = await recorded_number(service, user)
    sid = "CA" + uuid.uuid4().hex
    await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    call = await only_call(service, user)
    path = f"/webhook/voice/recording/status?callId={call['id']}"
    base = {"CallSid": sid, "RecordingSid": "RE" + "5" * 32}
    resp = await service.webhook(path, {**base, "RecordingStatus": "paused-ish"})
    assert resp.status == 400
    assert (await service.webhook(path, {**base, "RecordingStatus": "absent"})).status == 204
    assert (await only_call(service, user))["recording"] is None
    done = {**base, "RecordingStatus": "completed", "RecordingUrl": "https://api.twilio.com/r", "RecordingDuration": "3"}
    for _ in range(2):
        assert (await service.webhook(path, done)).status == 204
    assert (await only_call(service, user))["recording"]["durationSec"] == 3
    async with service.pool.acquire() as conn:
        statuses = await conn.fetch("SELECT payload->>'recordingStatus' AS s FROM events WHERE user_id = $1 "
                                    "AND type = 'call.recording' ORDER BY seq", user)
    assert [r["s"] for r in statuses] == ["absent", "completed"]
