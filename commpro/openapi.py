"""The OpenAPI 3.1 description of the service, served at /openapi.json.

Plain data, one entry per route under PATHS: to describe a new route, add its path and method
there (tests/test_openapi.py fails, naming the route, for any route of the app that is missing).
Request schemas are strict (additionalProperties: false), as the handlers are (Fields(allowed=)).
Twilio's webhooks are routes of ours, so they are under PATHS too, with their form fields; the
alert delivery we POST to the user's receiver is under WEBHOOKS.
"""

from __future__ import annotations

from aiohttp import web

from commpro import __version__
from commpro.openapi_schemas import (
    BOOL,
    BUSINESS_HOURS,
    CALL_STATUS,
    CONTENT_STATE,
    CURSOR,
    E164,
    GREETING_KIND,
    IDEMPOTENCY_KEY,
    INT,
    LIMIT,
    NUM,
    PAGE,
    RESPONSES,
    SCHEMAS,
    SECURITY_SCHEMES,
    SEND_ERRORS,
    STR,
    TIME,
    UNCONFIRMED_SENT,
    UUID,
    Schema,
    answer,
    closed,
    errors,
    json_body,
    null,
    ok,
    op,
    path,
    query,
    ref,
    twilio_webhook,
)

routes = web.RouteTableDef()

S = STR
CALL_ID_QUERY = query("callId", UUID, "our call id, in the URLs we give Twilio")

PATHS: dict[str, dict[str, Schema]] = {
    "/healthz": {"get": op("Liveness", "Operations", ok(answer({"status": {"const": "ok"}})), security=None)},
    "/readyz": {"get": op("Readiness: the database answers", "Operations",
                          {**ok(answer({"status": {"const": "ready"}})), **errors(503)}, security=None)},
    "/status": {"get": op("The service's dashboard", "Operations", ok({"type": "object"}))},
    "/metrics": {"get": op("Prometheus metrics", "Operations", {
        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}},
        **errors(401)}, security="metricsToken", optional=True)},
    "/openapi.json": {"get": op("This document", "Operations", ok({"type": "object"}), security=None)},
    "/media/{id}": {"get": op(
        "MMS media for Twilio to fetch", "Messages",
        {"200": {"description": "The file", "content": {"image/*": {"schema": {"type": "string",
                                                                              "format": "binary"}}}},
         **errors(403, 404, 503)},
        parameters=[path("id"), query("exp", {"type": "string", "pattern": "^[0-9]{1,12}$"}, required=True)],
        security="mediaSignature")},
    "/api/events": {"get": op(
        "The caller's events, as a WebSocket", "Events",
        {"101": {"description": "Switching to WebSocket: JSON text frames {id, type, data, at}"},
         **errors(400, 426)},
        parameters=[query("since", {"type": "integer", "minimum": 0, "maximum": 2**62},
                          "replay what came after this event id"),
                    query("token", STR, "the JWT, for browsers that cannot set headers")])},
    "/api/numbers": {"get": op("The caller's numbers", "Numbers",
                               ok(answer({"numbers": {"type": "array", "items": ref("Number")}})))},
    "/api/numbers/{id}": {"patch": op(
        "Change a number's inbound routing", "Numbers", {**ok(ref("Number")), **errors(400, 404, 415)},
        parameters=[path("id")],
        body=json_body({**closed({
            "routing": {"type": "string", "enum": ["forward", "voicemail", "reject"]},
            "ringTimeoutSec": {"type": "integer", "minimum": 5, "maximum": 120},
            "greetingText": null({"type": "string", "minLength": 1, "maxLength": 500}),
            "greetingVoice": null({"type": "string", "minLength": 1, "maxLength": 64}),
            "greetingLanguage": null({"type": "string", "pattern": "^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
                                      "maxLength": 16}),
            "blockedNumbers": {"type": "array", "items": E164, "maxItems": 500},
            "forwardTo": null(E164),
            "voicemailOnNoAnswer": BOOL,
            "screening": BOOL,
            "recordCalls": BOOL,
            "recordingAnnouncement": null({"type": "string", "maxLength": 500}),
            "businessHours": null(BUSINESS_HOURS),
        }), "minProperties": 1}))},
    "/api/numbers/{id}/greetings/{kind}": {
        "put": op("Upload a recorded greeting (multipart, a part named file: WAV or MP3)", "Numbers",
                  {**ok(answer({"kind": STR, "contentType": STR, "sizeBytes": INT, "updatedAt": TIME})),
                   **errors(400, 404, 413, 415)},
                  parameters=[path("id"), GREETING_KIND],
                  body={"required": True, "content": {"multipart/form-data": {"schema": closed(
                      {"file": {"type": "string", "format": "binary"}}, ("file",))}}}),
        "delete": op("Remove a recorded greeting (text-to-speech again)", "Numbers",
                     {"204": {"description": "Removed"}, **errors(404)}, parameters=[path("id"), GREETING_KIND]),
    },
    "/greetings/{id}": {"get": op(
        "A recorded greeting for Twilio to play", "Numbers",
        {"200": {"description": "Audio", "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
         **errors(403, 404, 503)},
        parameters=[path("id"), query("exp", {"type": "string", "pattern": "^[0-9]{1,12}$"}, required=True)],
        security="mediaSignature")},
    "/api/calls": {"get": op(
        "Call history, newest first", "Calls", {**ok(answer({"calls": {"type": "array", "items": ref("Call")},
                                                             **PAGE})), **errors(400)},
        parameters=[LIMIT, query("offset", {"type": "integer", "minimum": 0, "maximum": 10000}, "capped: page deeper by cursor"),
                    query("cursor", CURSOR), query("direction", {"type": "string", "enum": ["inbound", "outbound"]}),
                    query("status", {"type": "string", "enum": CALL_STATUS}),
                    query("since", TIME), query("until", TIME)])},
    "/api/calls/initiate": {"post": op(
        "Place a call: the caller's phone rings first, then the destination", "Calls",
        {**ok(ref("Placed"), "Placed", "201"),
         **ok(ref("Placed"), "Twilio's answer never came: the call is unconfirmed until a webhook confirms it",
              "202"),
         **SEND_ERRORS},
        parameters=[IDEMPOTENCY_KEY], body=json_body(closed({"from": E164, "to": E164}, ("from", "to"))))},
    "/api/calls/token": {
        "get": op("A Twilio Access Token for the apps (registers the app for inbound calls)", "Calls",
                  {**ok(answer({"token": STR, "identity": STR, "ttlSec": INT})), **errors(409)}),
        "delete": op("Sign the app out: inbound calls ring it no more", "Calls", {"204": {"description": "Done"}}),
    },
    "/api/calls/alerts": {"get": op(
        "Quality alerts, newest first", "Quality",
        {**ok(answer({"alerts": {"type": "array", "items": ref("Alert")}, **PAGE})), **errors(400)},
        parameters=[LIMIT, query("cursor", CURSOR), query("since", TIME)])},
    "/api/calls/{id}": {"get": op("One call", "Calls", {**ok(ref("Call")), **errors(404)},
                                  parameters=[path("id")])},
    "/api/calls/{id}/quality": {"get": op(
        "A call's quality figures (Voice Insights)", "Quality",
        {**ok(answer({
            "callId": UUID, "state": {"type": "string", "enum": ["pending", "partial", "complete", "unavailable"]},
            "jitter": null(NUM), "jitterMax": null(NUM), "latency": null(NUM), "rtt": null(NUM),
            "packetLoss": null(NUM), "mos": null(NUM), "mosEstimated": BOOL, "codec": null(STR), "edge": null(STR),
            "tags": {"type": "array", "items": STR}, "fetchedAt": null(TIME),
            "alerts": {"type": "array", "items": ref("Alert")}})), **errors(404)},
        parameters=[path("id")])},
    "/api/calls/{id}/recording": {"delete": op(
        "Delete a call's recording, here and at Twilio", "Calls",
        {"204": {"description": "Deleted"}, **errors(404, 502, 504)}, parameters=[path("id")]), "get": op(
        "A call's recording, streamed from Twilio", "Calls",
        {"200": {"description": "Audio", "content": {"audio/*": {"schema": {"type": "string", "format": "binary"}}}},
         **errors(400, 404, 502, 504)},
        parameters=[path("id"), query("format", {"type": "string", "enum": ["wav", "mp3"]})])},
    "/api/messages/send": {"post": op(
        "Send an SMS", "Messages", {**ok(ref("Sent"), "Queued at Twilio", "201"), **UNCONFIRMED_SENT,
                                    **SEND_ERRORS},
        parameters=[IDEMPOTENCY_KEY],
        body=json_body(closed({"from": E164, "to": E164, "body": {"type": "string", "minLength": 1,
                                                                  "maxLength": 1600}}, ("from", "to", "body"))))},
    "/api/messages/send-mms": {"post": op(
        "Send an MMS: links (JSON) or uploaded files (multipart, fields from, to, body, media)", "Messages",
        {**ok(ref("Sent"), "Queued at Twilio", "201"), **UNCONFIRMED_SENT, **SEND_ERRORS, **errors(413)},
        parameters=[IDEMPOTENCY_KEY],
        body={"required": True, "content": {
            "application/json": {"schema": closed({
                "from": E164, "to": E164, "body": {"type": "string", "maxLength": 1600},
                "mediaUrls": {"type": "array", "minItems": 1, "maxItems": 10,
                              "items": {"type": "string", "pattern": "^https://", "maxLength": 2000}},
            }, ("from", "to", "mediaUrls"))},
            "multipart/form-data": {"schema": closed({
                "from": E164, "to": E164, "body": {"type": "string", "maxLength": 1600},
                "media": {"type": "array", "minItems": 1, "maxItems": 10,
                          "items": {"type": "string", "format": "binary"}},
            }, ("from", "to", "media"))},
        }})},
    "/api/messages/conversations": {"get": op(
        "Conversations, most recent first", "Messages",
        {**ok(answer({"conversations": {"type": "array", "items": answer({
            "contactId": UUID, "phoneNumber": STR, "name": null(STR), "blocked": BOOL, "optedOut": BOOL,
            "lastMessage": answer({"id": UUID, "body": null(STR), "content": CONTENT_STATE,
                                   "direction": STR, "status": STR, "createdAt": TIME, "mediaCount": INT}),
            "unreadCount": INT, "lastMessageAt": TIME})}, **PAGE})), **errors(400)},
        parameters=[LIMIT, query("cursor", CURSOR)])},
    "/api/messages/conversations/{contactId}": {"get": op(
        "One conversation's messages, newest first", "Messages",
        {**ok(answer({"contact": ref("ConversationContact"), "messages": {"type": "array", "items": ref("Message")},
                      **PAGE})),
         **errors(400, 404)},
        parameters=[path("contactId"), LIMIT, query("before", CURSOR)])},
    "/api/messages/conversations/{contactId}/read": {"put": op(
        "Mark a conversation read", "Messages",
        {**ok(answer({"contactId": UUID, "unreadCount": {"const": 0}})), **errors(404)},
        parameters=[path("contactId")])},
    "/api/messages/{id}/read": {"put": op(
        "Mark a message read", "Messages", {**ok(answer({"id": UUID, "readAt": null(TIME)})), **errors(404)},
        parameters=[path("id")])},
    "/api/messages/{id}/media/{mediaId}": {"get": op(
        "One media file of a message, decrypted", "Messages",
        {"200": {"description": "The file", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
         **errors(404)},
        parameters=[path("id"), path("mediaId")])},
    "/api/messages/preview": {"post": op(
        "What a body would cost: Twilio's segment calculator, as a preview", "Messages",
        {**ok(answer({"segments": INT, "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
                      "characters": INT})), **errors(400, 415)},
        body=json_body(closed({"body": {"type": "string", "maxLength": 1600}}, ("body",))))},
    "/api/contacts": {"get": op(
        "Contacts, searchable by name (word prefixes) or number prefix", "Contacts",
        {**ok(answer({"contacts": {"type": "array", "items": ref("Contact")}, **PAGE})), **errors(400)},
        parameters=[LIMIT, query("cursor", CURSOR), query("q", {"type": "string", "minLength": 1, "maxLength": 100},
                                                          "a name (every word a prefix) or + and digits")])},
    "/api/contacts/{id}": {
        "get": op("One contact", "Contacts", {**ok(ref("Contact")), **errors(404)}, parameters=[path("id")]),
        "patch": op(
            "Name a contact, note it, block it (null clears the name or notes)", "Contacts",
            {**ok(ref("Contact")), **errors(400, 404, 415)}, parameters=[path("id")],
            body=json_body({**closed({"name": null({"type": "string", "minLength": 1, "maxLength": 100}),
                                      "notes": null({"type": "string", "maxLength": 2000}),
                                      "blocked": BOOL}), "minProperties": 1})),
    },
    "/": {"get": op("The console page (in development also the sandbox console)", "Operations",
                    {"200": {"description": "HTML", "content": {"text/html": {"schema": STR}}}}, security=None)},
    "/console/simulate/{kind}": {"post": op(
        "Development only: an inbound SMS or call to one of your numbers, through the sandbox", "Console",
        {**ok({"type": "object"}), **errors(400, 403, 415, 502)},
        parameters=[{"name": "kind", "in": "path", "required": True,
                     "schema": {"type": "string", "enum": ["sms", "call"]}}],
        body=json_body(closed({"from": E164, "to": E164, "body": {"type": "string", "maxLength": 1600}},
                              ("from", "to"))))},
    "/webhook/sms": {"post": twilio_webhook(
        "An inbound SMS or MMS", {"MessageSid": S, "From": S, "To": S, "Body": S, "NumMedia": S, "OptOutType": S,
                                  "MediaUrl0": S, "MediaContentType0": S},
        ("MessageSid", "From", "To"), "twiml")},
    "/webhook/status": {"post": twilio_webhook(
        "A message's status callback", {"MessageSid": S, "MessageStatus": S, "ErrorCode": S},
        ("MessageSid", "MessageStatus"), "empty", [query("messageId", UUID)])},
    "/webhook/voice": {"post": twilio_webhook(
        "An inbound call", {"CallSid": S, "From": S, "To": S}, ("CallSid", "From", "To"), "twiml")},
    "/webhook/voice/outbound": {"post": twilio_webhook(
        "A bridged or app call asks what to dial", {"CallSid": S, "From": S, "To": S, "CallerId": S},
        ("CallSid", "From"), "twiml", [CALL_ID_QUERY])},
    "/webhook/voice/completed": {"post": twilio_webhook(
        "The forwarded leg ended", {"CallSid": S, "DialCallStatus": S, "To": S},
        ("CallSid", "DialCallStatus", "To"), "twiml", [CALL_ID_QUERY])},
    "/webhook/voice/recording": {"post": twilio_webhook(
        "A recording (voicemail) is ready", {"CallSid": S, "RecordingSid": S, "RecordingUrl": S,
                                             "RecordingDuration": S},
        ("CallSid", "RecordingSid", "RecordingUrl"), "twiml", [CALL_ID_QUERY, query("voicemail", STR)])},
    "/webhook/voice/screen": {"post": twilio_webhook(
        "A screened phone leg answered: the whisper", {"CallSid": S, "To": S}, ("CallSid",), "twiml",
        [CALL_ID_QUERY])},
    "/webhook/voice/screen/result": {"post": twilio_webhook(
        "The key a screened leg pressed", {"CallSid": S, "Digits": S}, ("CallSid",), "twiml", [CALL_ID_QUERY])},
    "/webhook/voice/outbound/accept": {"post": twilio_webhook(
        "The key the user's phone pressed before the destination is dialled", {"CallSid": S, "Digits": S},
        ("CallSid",), "twiml", [CALL_ID_QUERY])},
    "/webhook/voice/announce": {"post": twilio_webhook(
        "The recording announcement, played to the answered destination", {"CallSid": S}, ("CallSid",), "twiml",
        [CALL_ID_QUERY])},
    "/webhook/voice/transcription": {"post": twilio_webhook(
        "A voicemail's transcription", {"CallSid": S, "RecordingSid": S, "TranscriptionStatus": S,
                                        "TranscriptionText": S},
        ("RecordingSid", "TranscriptionStatus"), "empty", [CALL_ID_QUERY])},
    "/webhook/voice/recording/status": {"post": twilio_webhook(
        "A call recording's status", {"CallSid": S, "RecordingSid": S, "RecordingUrl": S, "RecordingStatus": S,
                                      "RecordingDuration": S},
        ("RecordingSid", "RecordingStatus"), "empty", [CALL_ID_QUERY])},
    "/webhook/voice/status": {"post": twilio_webhook(
        "A call's status callback", {"CallSid": S, "CallStatus": S, "SequenceNumber": S, "CallDuration": S,
                                     "ErrorCode": S},
        ("CallSid", "CallStatus"), "empty", [CALL_ID_QUERY, query("leg", STR)])},
}

WEBHOOKS = {
    "qualityAlert": {"post": {
        "summary": "A quality alert, POSTed to ALERT_WEBHOOK_URL",
        "description": "X-CommPro-Signature: sha256=HMAC-SHA256(ALERT_WEBHOOK_SECRET, "
                       "'<X-CommPro-Timestamp>.<body>'); retried with backoff until a 2xx.",
        "requestBody": json_body(answer({"type": {"const": "quality.alert"}, "alert": answer({
            "id": UUID, "callId": UUID, "userId": STR, "kind": STR, "source": STR, "value": null(NUM),
            "threshold": null(NUM), "createdAt": TIME})})),
        "responses": {"2XX": {"description": "Received"}},
    }},
}


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {"title": "CommPro", "version": __version__,
                 "description": "Calls and messages through Twilio. Every error is "
                                "{\"error\": {\"code\", \"message\", \"details\"}}."},
        "paths": PATHS,
        "webhooks": WEBHOOKS,
        "components": {"schemas": SCHEMAS, "responses": RESPONSES, "securitySchemes": SECURITY_SCHEMES},
    }


@routes.get("/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


DOCS_PREFIX = "/docs"


def add_rendered_view(app: web.Application) -> None:
    """Swagger UI at /docs, reading /openapi.json: swagger-ui-py serves its own copy of the
    Swagger UI files (no CDN), so the page works offline and loads nothing from elsewhere."""
    from swagger_ui import api_doc

    api_doc(app, config_rel_url="/openapi.json", url_prefix=DOCS_PREFIX, title="CommPro API")
