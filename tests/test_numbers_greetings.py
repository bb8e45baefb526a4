"""Recorded greetings: uploaded (WAV or MP3, sniffed, size-limited), sealed at rest, played by
Twilio through a signed, expiring URL; the spoken text stays the fallback."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import aiohttp

from commpro.numbers import hours
from commpro.numbers.greetings import signed_greeting_url
from commpro.sandbox.audio import mp3_silence, wav_silence
from tests.conftest import new_user

CALLER = "+447911123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def number_id(service, user) -> str:
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    return entry["id"]


async def upload(service, user, number, kind, data: bytes, name: str = "file"):
    form = aiohttp.FormData()
    form.add_field(name, data, filename="greeting", content_type="application/octet-stream")
    url = service.app.router["put_greeting"].url_for(id=number, kind=kind)
    return await service.client.put(url, data=form, headers=service.auth(user))


async def test_an_uploaded_greeting_is_played_through_its_signed_url(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    nid = await number_id(service, user)
    audio = wav_silence(1)
    resp = await upload(service, user, nid, "voicemail", audio)
    assert resp.status == 200
    assert (await resp.json())["contentType"] == "audio/wav" and (await resp.json())["sizeBytes"] == len(audio)
    listed = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    assert listed[0]["recordedGreetings"] == ["voicemail"]
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [v.tag for v in root] == ["Play", "Record", "Hangup"]
    url = root.find("Play").text
    await service.sandbox_idle()
    # Twilio (the sandbox) fetched it, without credentials, and got the audio.
    assert (url, 200, "audio/wav") in service.sandbox.played
    path = url.removeprefix(service.config.server.public_base_url)
    got = await service.client.get(path)
    assert got.status == 200 and await got.read() == audio
    # Sealed at rest.
    async with service.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT ciphertext FROM number_greetings WHERE number_id = $1::uuid", nid)
    assert audio[:44] not in stored
    # A tampered or expired link is refused.
    assert (await service.client.get(path[:-2] + "xx")).status == 403
    greeting_id = path.split("/")[2].split("?")[0]
    expired = signed_greeting_url(service.config, greeting_id, now=time.time() - 7200)
    assert (await service.client.get(expired.removeprefix(service.config.server.public_base_url))).status == 403


async def test_mp3_after_hours_greeting_and_text_fallback(service):
    user = new_user()
    number = await service.add_number(user)
    nid = await number_id(service, user)
    async with service.pool.acquire() as conn:
        await conn.execute("UPDATE phone_numbers SET business_hours = $2 WHERE id = $1::uuid", nid,
                           hours.validate({"timeZone": "Europe/Paris"}))  # always closed
    resp = await upload(service, user, nid, "after-hours", mp3_silence(1))
    assert resp.status == 200 and (await resp.json())["contentType"] == "audio/mpeg"
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert root[0].tag == "Play"
    delete = service.app.router["delete_greeting"].url_for(id=nid, kind="after-hours")
    assert (await service.client.delete(delete, headers=service.auth(user))).status == 204
    assert (await service.client.delete(delete, headers=service.auth(user))).status == 404
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert root[0].tag == "Say" and root[0].text == service.config.voice.after_hours_greeting
    await service.sandbox_idle()


async def test_bad_uploads(start_service):
    service = await start_service(COMMPRO_VOICE_GREETING_MAX_BYTES="4096")
    user = new_user()
    await service.add_number(user)
    nid = await number_id(service, user)
    assert (await upload(service, user, nid, "voicemail", PNG)).status == 415
    assert (await upload(service, user, nid, "voicemail", wav_silence(1))).status == 413
    assert (await upload(service, user, nid, "hold-music", wav_silence(0))).status == 404
    assert (await upload(service, user, nid, "voicemail", wav_silence(0), name="audio")).status == 400
    assert (await upload(service, new_user(), nid, "voicemail", wav_silence(0))).status == 404
    url = service.app.router["put_greeting"].url_for(id=nid, kind="voicemail")
    resp = await service.client.put(url, json={"file": "x"}, headers=service.auth(user))
    assert resp.status == 415
    assert (await service.client.put(url, data=b"--x\r\nbroken", headers={
        **service.auth(user), "Content-Type": "multipart/form-data; boundary=x"})).status == 400
    unauthenticated = aiohttp.FormData()
    unauthenticated.add_field("file", wav_silence(0), filename="greeting.wav")
    assert (await service.client.put(url, data=unauthenticated)).status == 401
    listed = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    assert listed[0]["recordedGreetings"] == []
