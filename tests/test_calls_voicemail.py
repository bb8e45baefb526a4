"""Voicemail transcription: Twilio's <Record transcribe>, the transcript sealed at rest, shown on
the call, pushed as an event, and played by the sandbox."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

from commpro.sandbox import magic
from tests.conftest import new_user
from tests.test_events import next_event

CALLER = "+447911123456"


async def only_call(service, user) -> dict:
    resp = await service.client.get("/api/calls", headers=service.auth(user))
    [call] = (await resp.json())["calls"]
    return call


async def test_the_transcript_arrives_after_the_recording(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    result = await service.simulate_call(CALLER, number)
    record = ET.fromstring(result["webhook"]["response"]).find("Record")
    assert record.get("transcribe") == "true"
    assert urlsplit(record.get("transcribeCallback")).path == "/webhook/voice/transcription"
    event = await next_event(ws)
    while event["type"] != "call.transcript":
        event = await next_event(ws)
    assert event["data"] == {"callId": event["data"]["callId"], "transcriptStatus": "completed"}
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["recording"] is not None
    assert call["voicemail"] == {"transcript": f"Bonjour, ici le {CALLER}. Rappelez-moi s'il vous plaît.",
                                 "transcriptStatus": "completed"}
    single = await (await service.client.get(f"/api/calls/{call['id']}", headers=service.auth(user))).json()
    assert single["voicemail"] == call["voicemail"]
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT transcript_ciphertext, transcript_nonce FROM calls WHERE id = $1::uuid",
                                  call["id"])
    assert b"Rappelez" not in row["transcript_ciphertext"] and len(row["transcript_nonce"]) == 12
    await ws.close()


async def test_a_failed_transcription_is_shown_as_failed(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    await service.simulate_call(magic.NO_TRANSCRIPT, number)
    await service.sandbox_idle()
    call = await only_call(service, user)
    assert call["voicemail"] == {"transcript": None, "transcriptStatus": "failed"}


async def test_pending_until_the_transcript_then_once(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    sid = "CA" + uuid.uuid4().hex
    resp = await service.webhook("/webhook/voice", {"CallSid": sid, "From": CALLER, "To": number})
    action = urlsplit(ET.fromstring(await resp.text()).find("Record").get("action"))
    await service.webhook(f"{action.path}?{action.query}", {"CallSid": sid, "RecordingSid": "RE" + "1" * 32,
                                                           "RecordingUrl": "https://api.twilio.com/x",
                                                           "RecordingDuration": "4"})
    call = await only_call(service, user)
    assert call["voicemail"] == {"transcript": None, "transcriptStatus": "pending"}
    params = {"CallSid": sid, "TranscriptionSid": "TR" + "1" * 32, "TranscriptionStatus": "completed",
              "TranscriptionText": "Rappelle-moi"}
    for _ in range(2):  # Twilio retries: the same transcript, stored once
        assert (await service.webhook("/webhook/voice/transcription", params)).status == 204
    # A late "failed" never replaces a completed transcript.
    failed = {**params, "TranscriptionSid": "TR" + "2" * 32, "TranscriptionStatus": "failed"}
    assert (await service.webhook("/webhook/voice/transcription", failed)).status == 204
    call = await only_call(service, user)
    assert call["voicemail"] == {"transcript": "Rappelle-moi", "transcriptStatus": "completed"}
    async with service.pool.acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM events WHERE user_id = $1 AND type = 'call.transcript'",
                                    user)
    assert count == 1


async def test_transcription_webhook_bad_input(service):
    base = {"CallSid": "CA" + "3" * 32, "TranscriptionSid": "TR" + "3" * 32}
    resp = await service.webhook("/webhook/voice/transcription", {**base, "TranscriptionStatus": "maybe"})
    assert resp.status == 400 and "TranscriptionStatus" in (await resp.json())["error"]["details"]
    resp = await service.webhook("/webhook/voice/transcription", {"CallSid": base["CallSid"]})
    assert resp.status == 400
    resp = await service.webhook("/webhook/voice/transcription", {**base, "TranscriptionStatus": "completed",
                                                                  "TranscriptionText": "hello"})
    assert resp.status == 204  # an unknown call: nothing stored
