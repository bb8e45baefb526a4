"""Recordings and their transcripts, as Twilio reports them: the voicemail <Record> action, its
transcription callback. The webhook guard has checked each signature before these run.

A transcript is sealed with the user's data key, like a message body: the database holds no
plaintext, and the call.transcript event says only that it arrived (the event log is not
encrypted); the apps read the text on the call.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from commpro.appkeys import keyring_key, pool_key
from commpro.calls import store, twiml, voicemail_store
from commpro.calls.answering import call_id_param
from commpro.errors import ValidationError
from commpro.events import store as events
from commpro.messages.content import seal
from commpro.webhooks import form_int, webhook_form
from commpro.webhooks import twiml as twiml_response

log = structlog.get_logger("commpro.calls")
routes = web.RouteTableDef()
TRANSCRIPTION_STATUSES = ("completed", "failed")


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
    form = webhook_form(request, "CallSid", "TranscriptionSid", "TranscriptionStatus")
    status = form["TranscriptionStatus"]
    if status not in TRANSCRIPTION_STATUSES:
        raise ValidationError(details={"TranscriptionStatus": "completed or failed"})
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
