"""MMS: uploads checked by their bytes, signed URLs for Twilio, inbound media fetched in the
background with retries, and never lost across a restart."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time
import uuid

import aiohttp
import pytest
from aiohttp import web

from commpro.appkeys import jobs_key
from commpro.errors import BadGateway
from commpro.messages.media import MEDIA_FETCH, signed_media_url
from commpro.sandbox.state import SandboxMedia, new_sid
from commpro.twilio_gateway import build_gateway
from tests.conftest import WAIT_S, new_user

PEER = "+447911123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
GIF = b"GIF89a" + b"\x01" * 32
FAST_FETCH = {"COMMPRO_MESSAGES_FETCH_INTERVAL_S": "0.05", "COMMPRO_MESSAGES_FETCH_RETRY_FIRST_S": "0.05"}


def mms_form(number: str, files: list[tuple[bytes, str, str]], body: str = "regarde") -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("from", number)
    form.add_field("to", PEER)
    form.add_field("body", body)
    for data, name, content_type in files:
        form.add_field("media", io.BytesIO(data), filename=name, content_type=content_type)
    return form


async def send_mms(service, user, form):
    return await service.client.post("/api/messages/send-mms", data=form, headers=service.auth(user))


async def messages_of(service, user) -> list[dict]:
    convs = await (await service.client.get("/api/messages/conversations", headers=service.auth(user))).json()
    contact = convs["conversations"][0]["contactId"]
    resp = await service.client.get(f"/api/messages/conversations/{contact}", headers=service.auth(user))
    return (await resp.json())["messages"]


async def wait_for_media(service, user, done) -> list[dict]:
    """Wait, round after round of the fetcher, until `done(media)` holds."""
    condition = service.app[jobs_key].rounds[MEDIA_FETCH]

    async def rounds() -> list[dict]:
        while True:
            media = [m for message in await messages_of(service, user) for m in message["media"]]
            if done(media):
                return media
            async with condition:
                await condition.wait()

    return await asyncio.wait_for(rounds(), WAIT_S)


async def test_multipart_mms_is_served_to_twilio_through_a_signed_url(service):
    user = new_user()
    number = await service.add_number(user)
    resp = await send_mms(service, user, mms_form(number, [(PNG, "a.png", "image/png"), (GIF, "b.jpg", "image/jpeg")]))
    assert resp.status == 201, await resp.text()
    sent = await resp.json()
    assert sent["sid"].startswith("MM")
    await service.sandbox_idle()
    twilio_view = await service.sandbox.message(sent["sid"])
    assert twilio_view.status == "delivered", twilio_view.error_message  # the sandbox fetched both URLs
    assert all("/media/" in url and "sig=" in url for url in twilio_view.media_urls)
    [message] = await messages_of(service, user)
    # The type is the one the bytes say: the GIF sent as "image/jpeg" is a GIF.
    assert [(m["contentType"], m["size"]) for m in message["media"]] == [("image/png", len(PNG)), ("image/gif", len(GIF))]
    resp = await service.client.get(message["media"][0]["url"], headers=service.auth(user))
    assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == PNG
    resp = await service.client.get(message["media"][0]["url"], headers=service.auth(new_user()))
    assert resp.status == 404


async def test_upload_limits(service):
    user = new_user()
    number = await service.add_number(user)
    too_big = PNG + b"\x00" * service.config.messages.max_upload_bytes
    resp = await send_mms(service, user, mms_form(number, [(too_big, "big.png", "image/png")]))
    assert resp.status == 413
    resp = await send_mms(service, user, mms_form(number, [(b"<html>not an image</html>", "x.png", "image/png")]))
    assert resp.status == 415
    resp = await send_mms(service, user, mms_form(number, []))
    assert resp.status == 400 and "media" in (await resp.json())["error"]["details"]
    assert await service.sandbox.messages_from(number) == []


async def test_json_mms_with_links(service):
    user = new_user()
    number = await service.add_number(user)
    url = signed_media_url(service.config, uuid.uuid4())  # any https URL would do for Twilio
    link = "https://example.com/cat.png"
    resp = await service.client.post("/api/messages/send-mms", json={"from": number, "to": PEER, "mediaUrls": [link]},
                                     headers=service.auth(user))
    assert resp.status == 201
    assert (await service.sandbox.message((await resp.json())["sid"])).media_urls == (link,)
    [message] = await messages_of(service, user)
    assert message["media"][0]["url"] == link and message["body"] is None
    for bad in ([], ["http://example.com/x.png"], [link] * 11, "https://example.com/x.png", [url, 3]):
        resp = await service.client.post("/api/messages/send-mms", json={"from": number, "to": PEER, "mediaUrls": bad},
                                         headers=service.auth(user))
        assert resp.status == 400 and "mediaUrls" in (await resp.json())["error"]["details"], bad


async def test_signed_media_url_tampered_or_expired_is_403(service):
    user = new_user()
    number = await service.add_number(user)
    await send_mms(service, user, mms_form(number, [(PNG, "a.png", "image/png")]))
    await service.sandbox_idle()
    [message] = await messages_of(service, user)
    media_id = uuid.UUID(message["media"][0]["id"])
    good = signed_media_url(service.config, media_id).removeprefix(service.config.server.public_base_url)
    assert (await service.client.get(good)).status == 200
    other = uuid.uuid4()
    tampered = [good.replace(str(media_id), str(other)), good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                good.replace("exp=", "exp=9")]
    for url in tampered:
        resp = await service.client.get(url)
        assert resp.status == 403, url
    expired = signed_media_url(service.config, media_id, now=time.time() - 7200)
    resp = await service.client.get(expired.removeprefix(service.config.server.public_base_url))
    assert resp.status == 403 and "expired" in (await resp.json())["error"]["message"]


async def test_inbound_mms_media_is_fetched_in_the_background(start_service):
    service = await start_service(**FAST_FETCH)
    user = new_user()
    number = await service.add_number(user)
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    await service.client.post("/_sandbox/simulate/sms", headers={"Authorization": auth}, json={
        "from": PEER, "to": number, "body": "photo",
        "media": [{"contentType": "image/png", "dataBase64": base64.b64encode(PNG).decode()}]})
    [media] = await wait_for_media(service, user, lambda media: media and media[0]["state"] == "done")
    resp = await service.client.get(media["url"], headers=service.auth(user))
    assert await resp.read() == PNG and resp.content_type == "image/png"


async def test_media_fetch_is_retried_after_a_failure(start_service):
    service = await start_service(**FAST_FETCH)
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(mediaFailures=2)
    await post_inbound_mms(service, service, number, GIF)
    [media] = await wait_for_media(service, user, lambda media: media and media[0]["state"] == "done")
    async with service.pool.acquire() as conn:
        attempts = await conn.fetchval("SELECT fetch_attempts FROM message_media WHERE id = $1", uuid.UUID(media["id"]))
    assert attempts == 2 and media["contentType"] == "image/gif"


async def post_inbound_mms(service, twilio, number: str, data: bytes) -> str:
    """Put a media file in `twilio`'s sandbox and post the signed webhook announcing it to `service`."""
    sid = new_sid("MM")
    media = SandboxMedia(new_sid("ME"), sid, twilio.config.twilio.account_sid, "image/gif", data)
    await twilio.sandbox.add_media(media)
    url = f"{twilio.config.twilio.api_base_url}/2010-04-01/Accounts/{media.account_sid}/Messages/{sid}/Media/{media.sid}"
    resp = await service.webhook("/webhook/sms", {"MessageSid": sid, "From": PEER, "To": number, "Body": "",
                                                  "NumMedia": "1", "MediaUrl0": url, "MediaContentType0": "image/gif"})
    assert resp.status == 200
    return sid


async def test_pending_media_survives_a_restart(start_service, make_config):
    twilio = await start_service()  # plays Twilio for the two instances below
    api = twilio.config.twilio.api_base_url
    first = await start_service(config=make_config(TWILIO_API_BASE_URL=api, COMMPRO_MESSAGES_FETCH_RETRY_FIRST_S="0.05",
                                                   COMMPRO_MESSAGES_FETCH_INTERVAL_S="0.05"))
    user = new_user()
    number = await first.add_number(user)
    await twilio.sandbox_control(mediaFailures=1000)
    await post_inbound_mms(first, twilio, number, GIF)
    [media] = await wait_for_media(first, user, lambda media: media and media[0]["state"] == "pending")
    await first.client.close()  # the process stops with the media still to fetch
    await twilio.sandbox_control(mediaFailures=0)
    second = await start_service(config=make_config(TWILIO_API_BASE_URL=api, **FAST_FETCH))
    [media] = await wait_for_media(second, user, lambda media: media and media[0]["state"] == "done")
    resp = await second.client.get(media["url"], headers=second.auth(user))
    assert await resp.read() == GIF


async def test_media_redirect_to_another_host_is_followed_without_credentials(start_service, aiohttp_server):
    """Twilio's authenticated host chooses where media is (its CDN, or S3 for older media): that
    redirect is followed, without our credentials; a URL outside Twilio is never fetched."""
    seen = []

    async def elsewhere(request):
        seen.append((request.path, request.headers.get("Authorization")))
        return web.Response(body=PNG, content_type="image/png")

    async def fake_twilio(request):
        if "/Media/" not in request.path:
            # The service's own price jobs may ask about other tests' calls (a shared database).
            raise web.HTTPNotFound()
        target = request.query.get("to", str(other_server.make_url("/bucket/ME1")))
        raise web.HTTPTemporaryRedirect(location=target)

    other_app, twilio_app = web.Application(), web.Application()
    other_app.router.add_get("/{tail:.*}", elsewhere)
    twilio_app.router.add_get("/{tail:.*}", fake_twilio)
    other_server = await aiohttp_server(other_app)
    twilio_server = await aiohttp_server(twilio_app)
    api = str(twilio_server.make_url("")).rstrip("/")
    service = await start_service(TWILIO_API_BASE_URL=api)
    resp = await service.twilio.open_media(api + "/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1")
    assert await resp.read() == PNG
    assert seen == [("/bucket/ME1", None)]
    with pytest.raises(BadGateway, match="outside Twilio"):
        await service.twilio.open_media(str(other_server.make_url("/steal")))
    with pytest.raises(BadGateway, match="not https"):
        await service.twilio.open_media(api + "/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME2?to=ftp://x/ME2")
    assert len(seen) == 1


async def test_live_mode_follows_media_redirects_to_https_only(start_service, aiohttp_server):
    """Outside the sandbox a redirect to plain http is refused: the media would travel in clear."""
    seen = []

    async def fake_twilio(request):
        seen.append(request.path)
        raise web.HTTPTemporaryRedirect(location="http://s3-external-1.amazonaws.com.invalid/bucket/ME1")

    twilio_app = web.Application()
    twilio_app.router.add_get("/{tail:.*}", fake_twilio)
    twilio_server = await aiohttp_server(twilio_app)
    api = str(twilio_server.make_url("")).rstrip("/")
    service = await start_service(TWILIO_API_BASE_URL=api)
    live = build_gateway(dataclasses.replace(service.config.twilio, sandbox=False))
    try:
        assert live.mode == "live"
        with pytest.raises(BadGateway, match="not https"):
            await live.open_media(api + "/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1")
    finally:
        await live.close()
    # The service's own price jobs may ask this stand-in about other tests' calls meanwhile (the
    # database is shared): only media requests count.
    assert [path for path in seen if "/Media/" in path] == ["/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"]
