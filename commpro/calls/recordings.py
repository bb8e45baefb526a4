"""Recordings and their transcripts: the voicemail <Record> action, its transcription callback,
call recordings (<Dial record>) through their status callback, and their deletion by the user,
here and at Twilio. The webhook guard has checked each signature before the webhooks run.

A transcript is sealed with the user's data key, like a message body: the database holds no
plaintext, and the call.transcript event says only that it arrived (the event log is not
encrypted); the apps read the text on the call.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from commpro.appkeys import config_key, keyring_key, pool_key, twilio_key
from commpro.auth import user_id
from commpro.calls import store, twiml, voicemail_store
from commpro.calls.answering import call_id_param
from commpro.errors import NotFound, ValidationError
from commpro.events import store as events
from commpro.messages.content import seal
from commpro.numbers import store as numbers
from commpro.validation import parse_uuid
from commpro.webhooks import form_int, webhook_form
from commpro.webhooks import twiml as twiml_response

log = structlog.get_logger("commpro.calls")
routes = web.RouteTableDef()
TRANSCRIPTION_STATUSES = ("completed", "failed")
RECORDING_STATUSES = ("in-progress", "completed", "absent", "failed")


def _status_form(request: web.Request, sid_field: str, status_field: str, allowed: tuple[str, ...]):
    """The callback's form and its status, one of `allowed` (else a 400 naming the field)."""
    form = webhook_form(request, "CallSid", sid_field, status_field)
    if form[status_field] not in allowed:
        raise ValidationError(details={status_field: "one of " + ", ".join(allowed)})
    return form, form[status_field]


@routes.post("/webhook/voice/recording", name="webhook_voice_recording")
async def recording(request: web.Request) -> web.Response:
    form = webhook_form(request, "CallSid", "RecordingSid", "RecordingUrl")
    duration = form_int(form, "RecordingDuration")
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        call = await store.find_webhook_call(conn, call_id_param(request), form["CallSid"])
        if call is None:
            log.warning("recording_for_unknown_call", call_sid=form["CallSid"])
        else:
            await store.set_recording(conn, call["id"], form["RecordingSid"], form["RecordingUrl"], duration,
                                      request.query.get("voicemail") == "1")
            if request.query.get("transcribe") == "1":
                await voicemail_store.transcript_pending(conn, call["id"])
    return twiml_response(twiml.hangup())


@routes.post("/webhook/voice/transcription", name="webhook_voice_transcription")
async def transcription(request: web.Request) -> web.Response:
    """Twilio's transcribeCallback: the voicemail's text (or its failure), sealed before it is stored."""
    form, status = _status_form(request, "TranscriptionSid", "TranscriptionStatus", TRANSCRIPTION_STATUSES)
    text = form.get("TranscriptionText") or ""
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        call = await store.find_webhook_call(conn, call_id_param(request), form["CallSid"])
        if call is None:
            log.warning("transcription_for_unknown_call", call_sid=form["CallSid"])
            return web.Response(status=204)
        sealed = None
        if status == "completed":
            key = await request.config_dict[keyring_key].data_key(conn, call["user_id"], create=True)
            sealed = seal(key, "transcript", call["user_id"], call["id"], text.encode())
        if await voicemail_store.set_transcript(conn, call["id"], status, sealed, form["TranscriptionSid"]):
            await events.publish(conn, call["user_id"], "call.transcript",
                                 {"callId": str(call["id"]), "transcriptStatus": status})
    return web.Response(status=204)


@routes.post("/webhook/voice/recording/status", name="webhook_voice_recording_status")
async def recording_status(request: web.Request) -> web.Response:
    """<Dial record>'s recordingStatusCallback: the call's recording is ready (or there is none)."""
    form, status = _status_form(request, "RecordingSid", "RecordingStatus", RECORDING_STATUSES)
    if status == "in-progress":
        return web.Response(status=204)
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        call = await store.find_webhook_call(conn, call_id_param(request), form["CallSid"])
        if call is None:
            log.warning("recording_for_unknown_call", call_sid=form["CallSid"])
            return web.Response(status=204)
        if await voicemail_store.set_call_recording(conn, call["id"], form["RecordingSid"], form.get("RecordingUrl"),
                                                    form_int(form, "RecordingDuration"), status):
            await events.publish(conn, call["user_id"], "call.recording",
                                 {"callId": str(call["id"]), "recordingStatus": status})
    return web.Response(status=204)


@routes.post("/webhook/voice/announce", name="webhook_voice_announce")
async def announce(request: web.Request) -> web.Response:
    """<Number url> on a recorded call's destination: it hears the announcement on answering."""
    webhook_form(request, "CallSid")
    async with request.config_dict[pool_key].acquire() as conn:
        call = await store.find_webhook_call(conn, call_id_param(request), None)
        number = await numbers.get_number_by_id(conn, call["phone_number_id"]) if call else None
    if number is None:
        return twiml_response(twiml.hangup())
    return twiml_response(twiml.announce(request.config_dict[config_key], number))


@routes.delete("/api/calls/{id}/recording", name="delete_call_recording")
async def delete_recording(request: web.Request) -> web.Response:
    """Delete the recording (a call's or a voicemail's) at Twilio, then here. Twilio first: a
    recording we forget but Twilio keeps is the failure a user would never see."""
    call_id, user = parse_uuid(request.match_info["id"]), user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        sid = await voicemail_store.own_recording(conn, user, call_id)
    if sid is None:
        raise NotFound("This call has no recording")
    gateway = request.config_dict[twilio_key]
    try:
        await gateway.call("recordings.delete", lambda: gateway.client.recordings(sid).delete_async())
    except NotFound:
        log.info("recording_already_gone_at_twilio", call_id=str(call_id))
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        if await voicemail_store.delete_recording(conn, user, call_id, sid):
            await events.publish(conn, user, "call.recording", {"callId": str(call_id), "recordingStatus": "deleted"})
    return web.Response(status=204)
