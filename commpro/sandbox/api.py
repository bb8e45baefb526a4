"""The Twilio REST API as the sandbox serves it: Calls, Messages, Media, Recordings, Insights.

Only what CommPro uses, answering like Twilio: form-encoded requests, HTTP Basic auth with the
account SID and auth token, JSON resources, and Twilio's error body and codes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import timedelta

from aiohttp import web

from commpro.sandbox import magic, store
from commpro.sandbox.audio import mp3_silence, wav_silence
from commpro.sandbox.lifecycle import drive_call
from commpro.sandbox.messaging import drive_message
from commpro.sandbox.state import SandboxCall, SandboxMessage, SandboxState, iso, new_sid, now, sandbox_state_key

routes = web.RouteTableDef()
ACCOUNT = "/api/2010-04-01/Accounts/{account_sid}"
MAX_BODY = 1600


def twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status=status,
    )


def not_found() -> web.Response:
    return twilio_error(404, 20404, "The requested resource was not found")


def _state(request: web.Request) -> SandboxState:
    return request.app[sandbox_state_key]


def authorized(request: web.Request) -> bool:
    """HTTP Basic with the account SID and auth token, as Twilio requires."""
    state = _state(request)
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(user, state.account_sid) and hmac.compare_digest(
        password, state.config.auth_token
    )


# Hosts that serve public links, like Twilio's CDN and S3: no account credentials.
PUBLIC_ROUTES = frozenset({"sandbox_media_host", "sandbox_s3_media"})
# A message's body may be redacted once nothing more will happen to it.
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "received", "read", "canceled"})


@web.middleware
async def basic_auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.match_info.route.name not in PUBLIC_ROUTES and not authorized(request):
        return twilio_error(401, 20003, "Authentication Error - invalid username")
    account = request.match_info.get("account_sid")
    if account is not None and account != _state(request).account_sid:
        return not_found()
    return await handler(request)


def _refusal(state: SandboxState, to: str, from_: str, to_errors: dict, from_errors: dict) -> web.Response | None:
    if state.account_status != "active":
        return twilio_error(*magic.ACCOUNT_SUSPENDED)
    if from_ in from_errors:
        return twilio_error(*from_errors[from_])
    if to in to_errors:
        return twilio_error(*to_errors[to])
    return None


@routes.post(ACCOUNT + "/Calls.json", name="sandbox_create_call")
async def create_call(request: web.Request) -> web.Response:
    state = _state(request)
    form = await request.post()
    to, from_ = form.get("To", ""), form.get("From", "")
    if not to:
        return twilio_error(400, 21201, "No 'To' number is specified")
    if not from_:
        return twilio_error(400, 21213, "No 'From' number is specified")
    if not form.get("Url") and not form.get("Twiml"):
        return twilio_error(400, 21205, "Either a 'Url' or 'Twiml' parameter is required")
    refusal = _refusal(state, to, from_, magic.CALL_TO_ERRORS, magic.CALL_FROM_ERRORS)
    if refusal is not None:
        return refusal
    events = set()
    for value in form.getall("StatusCallbackEvent", []):
        events.update(value.split())
    call = SandboxCall(
        new_sid("CA"), state.account_sid, from_, to, "outbound-api",
        url=form.get("Url"), twiml=form.get("Twiml"),
        status_callback=form.get("StatusCallback"),
        status_events=frozenset(events or {"completed"}),
    )
    await state.save_call(call)
    state.spawn(drive_call(state, call), delay_s=state.lifecycle_delay_s)
    return web.json_response(call.json(), status=201)


@routes.get(ACCOUNT + "/Calls/{sid}.json", name="sandbox_fetch_call")
async def fetch_call(request: web.Request) -> web.Response:
    state, sid = _state(request), request.match_info["sid"]
    state.call_fetches[sid] = state.call_fetches.get(sid, 0) + 1
    call = await state.call(sid)
    if call is None:
        return not_found()
    return web.json_response(call.json())


@routes.post(ACCOUNT + "/Messages.json", name="sandbox_create_message")
async def create_message(request: web.Request) -> web.Response:
    state = _state(request)
    form = await request.post()
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    media_urls = tuple(form.getall("MediaUrl", []))
    if not to:
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not from_:
        return twilio_error(400, 21603, "A 'From' phone number is required.")
    if not body and not media_urls:
        return twilio_error(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY:
        return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if len(media_urls) > 10:
        return twilio_error(400, 21623, "Number of media files exceeds allowed limit.")
    refusal = _refusal(state, to, from_, magic.MESSAGE_TO_ERRORS, magic.MESSAGE_FROM_ERRORS)
    if refusal is not None:
        return refusal
    message = SandboxMessage(
        new_sid("MM" if media_urls else "SM"), state.account_sid, from_, to, body, "outbound-api",
        status_callback=form.get("StatusCallback"), media_urls=media_urls,
    )
    await state.add_message(message)
    state.spawn(drive_message(state, message), delay_s=state.lifecycle_delay_s)
    return web.json_response(message.json(), status=201)


async def _message(request: web.Request) -> SandboxMessage | None:
    return await _state(request).message(request.match_info["sid"])


@routes.get(ACCOUNT + "/Messages/{sid}.json", name="sandbox_fetch_message")
async def fetch_message(request: web.Request) -> web.Response:
    message = await _message(request)
    if message is None:
        return not_found()
    return web.json_response(message.json())


@routes.post(ACCOUNT + "/Messages/{sid}.json", name="sandbox_update_message")
async def update_message(request: web.Request) -> web.Response:
    """Body="" redacts a final message's body, as on Twilio; the rest of the record stays."""
    state, message = _state(request), await _message(request)
    if message is None:
        return not_found()
    form = await request.post()
    if form.get("Body") != "" or "Status" in form:
        return twilio_error(400, 30400, "Parameters are not valid: only an empty Body (redaction) is supported")
    if message.status not in FINAL_STATUSES:
        # The sandbox's choice of code: Twilio redacts only post-flight messages.
        return twilio_error(400, 30400, "The message is not final yet: its body cannot be redacted")
    message.body, message.redacted, message.updated = "", True, now()
    if not await store.redact_message(state.db(), message.sid, state.account_sid, message.updated):
        return not_found()
    state.erasures.append(("redact", message.sid))
    return web.json_response(message.json())


@routes.delete(ACCOUNT + "/Messages/{sid}/Media/{media_sid}.json", name="sandbox_delete_media")
async def delete_media(request: web.Request) -> web.Response:
    state, sid, media_sid = _state(request), request.match_info["sid"], request.match_info["media_sid"]
    if not await store.delete_media(state.db(), media_sid, sid, state.account_sid):
        return not_found()
    state.erasures.append(("delete-media", media_sid))
    return web.Response(status=204)


@routes.get(ACCOUNT + "/Messages/{sid}/Media.json", name="sandbox_list_media")
async def list_media(request: web.Request) -> web.Response:
    message = await _message(request)
    if message is None:
        return not_found()
    uri = f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}/Media.json"
    return web.json_response({
        "media_list": [m.json() for m in message.media],
        "end": max(len(message.media) - 1, 0), "first_page_uri": uri + "?PageSize=50&Page=0",
        "next_page_uri": None, "page": 0, "page_size": 50, "previous_page_uri": None,
        "start": 0, "uri": uri,
    })


@routes.get(ACCOUNT + "/Messages/{sid}/Media/{media_sid}.json", name="sandbox_fetch_media")
async def fetch_media(request: web.Request) -> web.Response:
    media = await _state(request).media(request.match_info["media_sid"])
    if media is None or media.message_sid != request.match_info["sid"]:
        return not_found()
    return web.json_response(media.json())


@routes.get(ACCOUNT + "/Messages/{sid}/Media/{media_sid}", name="sandbox_media_content")
async def media_content(request: web.Request) -> web.Response:
    """Twilio answers a media URL with a redirect to its media host (or S3 for older media); the
    sandbox does the same. Its S3 stand-in is under another host name (localhost)."""
    state = _state(request)
    media = await state.media(request.match_info["media_sid"])
    if media is None or media.message_sid != request.match_info["sid"]:
        return not_found()
    if state.media_redirect == "s3":
        location = request.app.router["sandbox_s3_media"].url_for(bucket="com.twilio.music.media", media_sid=media.sid)
        target = request.url.with_host("localhost").join(location)
    else:
        target = request.url.join(request.app.router["sandbox_media_host"].url_for(media_sid=media.sid))
    raise web.HTTPTemporaryRedirect(location=str(target))


@routes.get("/media-host/{media_sid}", name="sandbox_media_host")
async def media_host(request: web.Request) -> web.Response:
    state = _state(request)
    if state.media_failures > 0:
        state.media_failures -= 1
        raise web.HTTPInternalServerError()
    media = await state.media(request.match_info["media_sid"])
    if media is None:
        raise web.HTTPNotFound()
    return web.Response(body=media.data, content_type=media.content_type)


@routes.get("/s3-external-1/{bucket}/{media_sid}", name="sandbox_s3_media")
async def s3_media(request: web.Request) -> web.Response:
    """Like S3 serving a presigned link: account credentials sent along are an error."""
    if "Authorization" in request.headers:
        return web.Response(status=400, text="<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                            "allowed</Message></Error>", content_type="application/xml")
    state = _state(request)
    media = await state.media(request.match_info["media_sid"])
    if media is None:
        return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
    state.s3_downloads += 1
    return web.Response(body=media.data, content_type=media.content_type)


@routes.get(ACCOUNT + "/Recordings/{sid}.json", name="sandbox_fetch_recording")
async def fetch_recording(request: web.Request) -> web.Response:
    rec = await _state(request).recording(request.match_info["sid"])
    if rec is None:
        return not_found()
    return web.json_response(rec.json())


@routes.delete(ACCOUNT + "/Recordings/{sid}.json", name="sandbox_delete_recording")
async def delete_recording(request: web.Request) -> web.Response:
    """Twilio deletes the recording (its audio with it): 204, then 404 for good."""
    state = _state(request)
    if not await state.delete_recording(request.match_info["sid"]):
        return not_found()
    state.deleted_recordings.add(request.match_info["sid"])
    return web.Response(status=204)


@routes.get(ACCOUNT + "/Recordings/{sid}", name="sandbox_recording_audio")
async def recording_audio(request: web.Request) -> web.Response:
    """The recording as audio, silence as long as the recording: WAV, or MP3 for `.mp3`."""
    name = request.match_info["sid"]
    rec = await _state(request).recording(name.removesuffix(".wav").removesuffix(".mp3"))
    if rec is None:
        return not_found()
    if name.endswith(".mp3"):
        return web.Response(body=mp3_silence(rec.duration), content_type="audio/mpeg")
    return web.Response(body=wav_silence(rec.duration), content_type="audio/x-wav")


@routes.get("/insights/v1/Voice/{call_sid}/Summary", name="sandbox_call_summary")
async def call_summary(request: web.Request) -> web.Response:
    """Partial a while after the call ends, complete later; 404 before, as on Twilio."""
    state = _state(request)
    sid = request.match_info["call_sid"]
    state.summary_fetches[sid] = state.summary_fetches.get(sid, 0) + 1
    if state.summary_errors:
        if state.summary_errors.pop(0) == 429:
            return twilio_error(429, 20429, "Too many requests")
        return not_found()
    call = await state.call(sid)
    s = state.config.pacing
    if (call is None or call.end is None or magic.NO_SUMMARY in (call.to, call.from_)
            or now() - call.end < timedelta(seconds=s.summary_partial_after_s)):
        return not_found()
    complete = state.summaries_complete or now() - call.end >= timedelta(seconds=s.summary_complete_after_s)
    wanted = request.query.get("ProcessingState", "complete")
    if wanted == "complete" and not complete:
        return not_found()
    return web.json_response(summary_json(state, call, "complete" if complete else "partial"))


def summary_json(state: SandboxState, call: SandboxCall, processing_state: str) -> dict:
    poor = magic.POOR_QUALITY in (call.to, call.from_)
    app_call = call.to.startswith("client:") or call.from_.startswith("client:")
    poor_app = app_call and any(n.startswith("client:poor") for n in (call.to, call.from_))
    jitter, loss, latency = (45.0, 5.2, 180.0) if poor else (2.1, 0.1, 38.0)
    carrier = {
        "metrics": {
            "inbound": {"jitter": {"avg": jitter, "max": jitter * 3}, "packets_loss_percentage": loss,
                        "latency": {"avg": latency, "max": latency * 1.5}, "codec_name": "pcmu"},
            "outbound": {"jitter": {"avg": jitter, "max": jitter * 3}, "packets_loss_percentage": loss,
                         "latency": {"avg": latency, "max": latency * 1.5}, "codec_name": "pcmu"},
        },
        "properties": {"media_region": "us1", "edge_location": "ashburn"},
    }
    sdk = {
        "metrics": {
            "inbound": {"jitter": {"avg": 3.0, "max": 9.0}, "packets_loss_percentage": 0.2},
            "outbound": {"mos": {"average": 2.8 if poor_app else 4.3, "min": 2.1 if poor_app else 4.1},
                         "rtt": {"avg": 450.0 if poor_app else 80.0, "max": 600.0 if poor_app else 120.0},
                         "jitter": {"avg": 3.0, "max": 9.0}, "packets_loss_percentage": 0.2,
                         "codec_name": "opus"},
        }
    }
    tags = (["high_jitter", "high_packet_loss"] if poor else []) + (["low_mos"] if poor_app else [])
    return {
        "account_sid": call.account_sid,
        "call_sid": call.sid,
        "call_type": "client" if app_call else "carrier",
        "call_state": "completed" if call.status == "completed" else "fail",
        "answered_by": "unknown",
        "processing_state": processing_state,
        "created_time": iso(call.created),
        "start_time": iso(call.start or call.created),
        "end_time": iso(call.end),
        "duration": call.duration or 0,
        "connect_duration": call.duration or 0,
        "from": {"caller": call.from_},
        "to": {"callee": call.to},
        "carrier_edge": None if app_call else carrier,
        "client_edge": None,
        "sdk_edge": sdk if app_call else None,
        "sip_edge": None,
        "tags": tags,
        "url": f"https://insights.twilio.com/v1/Voice/{call.sid}/Summary",
        "attributes": {},
        "properties": {"direction": call.direction},
        "trust": None,
        "annotation": None,
    }
