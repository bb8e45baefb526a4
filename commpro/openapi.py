"""The OpenAPI 3.1 description of the service, served at /openapi.json.

Plain data, one entry per route under PATHS: to describe a new route, add its path and method
there (tests/test_openapi.py fails, naming the route, for any route of the app that is missing).
Request schemas are strict (additionalProperties: false), as the handlers are (Fields(allowed=)).
Twilio's webhooks are routes of ours, so they are under PATHS too, with their form fields; the
alert delivery we POST to the user's receiver is under WEBHOOKS.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from commpro import __version__

routes = web.RouteTableDef()
Schema = dict[str, Any]

# -- schema helpers ------------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def null(schema: Schema) -> Schema:
    """`schema` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def closed(properties: dict[str, Schema], required: tuple[str, ...] | list[str] = ()) -> Schema:
    """An object with exactly these properties: nothing else is accepted or answered."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def answer(properties: dict[str, Schema]) -> Schema:
    """A response object: every property always present."""
    return closed(properties, tuple(properties))


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
E164 = {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$", "description": "E.164 phone number"}
CURSOR = {"type": "string", "description": "nextCursor of the previous page"}


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def ok(schema: Schema, description: str = "OK", status: str = "200") -> dict[str, Schema]:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}}


def errors(*statuses: int) -> dict[str, Schema]:
    """The error body, for each status a route may answer with."""
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def path(name: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Retry safely: the same key and body get the first answer again (Idempotent-Replayed: true)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7e]+$"},
}
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "page size")
# Every JWT route answers these: a bad token, a database outage.
JWT_ERRORS = (401, 503)


def op(summary: str, tag: str, responses: dict[str, Schema], *, parameters: list[Schema] | None = None,
       body: Schema | None = None, security: str | None = "bearer", optional: bool = False,
       description: str = "") -> Schema:
    operation: Schema = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    # `optional`: the credential is only needed when the operator configured one ({} = none).
    operation["security"] = ([{}] if optional else []) + ([{security: []}] if security else [])
    if security == "bearer":
        operation["responses"] = {**errors(*JWT_ERRORS), **responses}
    return operation


# -- shapes of the API's objects ------------------------------------------------------------------

CALL_STATUS = ["unconfirmed", "queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"]
MESSAGE_STATUS = ["unconfirmed", "queued", "sending", "sent", "delivered", "undelivered", "failed", "receiving",
                  "received", "read", "accepted", "scheduled", "canceled", "partially_delivered"]
CONTENT_STATE = {"type": "string", "enum": ["available", "erased", "unreadable"]}

# A number's weekly schedule in its own time zone (commpro/numbers/hours.py checks it in full).
BUSINESS_HOURS = {
    "type": "object",
    "description": "{timeZone (IANA), weekly: {mon: [[\"09:00\", \"18:00\"]], ...}, exceptions: [{date, hours}], "
                   "afterHours: voicemail | reject | forward, afterHoursGreeting, afterHoursForwardTo}",
    "properties": {"timeZone": STR, "weekly": {"type": "object"}, "exceptions": {"type": "array"},
                   "afterHours": {"type": "string", "enum": ["voicemail", "reject", "forward"]},
                   "afterHoursGreeting": null(STR), "afterHoursForwardTo": null(STR)},
}
GREETING_KIND = {"name": "kind", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": ["voicemail", "after-hours"]}}

SCHEMAS: dict[str, Schema] = {
    "Error": answer({"error": answer({
        "code": STR, "message": STR,
        "details": {"description": "per-field problems, or more about the error", "type": ["object", "null"]},
    })}),
    "Call": answer({
        "id": UUID, "sid": null(STR), "direction": {"type": "string", "enum": ["inbound", "outbound"]},
        "from": STR, "to": STR, "status": STR, "createdAt": TIME, "answeredAt": null(TIME),
        "endedAt": null(TIME), "durationSec": null(INT), "price": null(STR), "priceUnit": null(STR),
        "recording": null(answer({"url": STR, "durationSec": null(INT)})),
        "voicemail": null(answer({"transcript": null(STR), "transcriptStatus": {
            "type": "string", "enum": ["none", "pending", "completed", "failed", "erased", "unreadable"]}})),
        "answeredBy": null({"type": "string", "enum": ["app", "phone"]}),
        "errorCode": null(INT),
    }),
    "Alert": answer({"id": UUID, "callId": UUID, "kind": STR, "source": {"type": "string",
                                                                         "enum": ["threshold", "twilio"]},
                     "value": null(NUM), "threshold": null(NUM), "createdAt": TIME}),
    "Media": answer({"id": UUID, "contentType": null(STR), "size": null(INT), "url": null(STR), "state": STR}),
    "Message": answer({
        "id": UUID, "direction": {"type": "string", "enum": ["inbound", "outbound"]}, "from": STR, "to": STR,
        "body": null(STR), "content": CONTENT_STATE, "media": {"type": "array", "items": ref("Media")},
        "status": STR, "errorCode": null(INT), "errorMessage": null(STR), "segments": null(INT),
        "readAt": null(TIME), "createdAt": TIME,
    }),
    "ConversationContact": answer({"id": UUID, "phoneNumber": STR, "name": null(STR), "blocked": BOOL,
                                   "optedOut": BOOL}),
    "Contact": answer({"id": UUID, "phoneNumber": STR, "name": null(STR), "notes": null(STR), "blocked": BOOL,
                       "optedOut": BOOL, "createdAt": TIME, "updatedAt": TIME}),
    "Number": answer({
        "id": UUID, "number": STR, "identity": null(STR), "forwardTo": null(STR),
        "routing": {"type": "string", "enum": ["forward", "voicemail", "reject"]}, "ringTimeoutSec": INT,
        "voicemailOnNoAnswer": BOOL, "screening": BOOL, "recordCalls": BOOL, "recordingAnnouncement": STR,
        "greeting": answer({"text": null(STR), "voice": STR, "language": STR}),
        "blockedNumbers": {"type": "array", "items": STR},
        "businessHours": null(BUSINESS_HOURS),
        "recordedGreetings": {"type": "array", "items": {"type": "string", "enum": ["voicemail", "after-hours"]}},
        "open": BOOL, "openChangesAt": null(TIME), "createdAt": TIME,
    }),
    # 201 once Twilio took it; 202 `unconfirmed` (no sid) when Twilio's answer never came. A
    # replayed Idempotency-Key answers the message as it stands.
    "Sent": answer({"messageId": UUID, "status": STR, "sid": null(STR), "segments": null(INT),
                    "encoding": null(STR)}),
    "Placed": answer({"callId": UUID, "status": STR, "sid": null(STR)}),
}

_ERROR_TEXT = {400: "Invalid request (details name each bad field)", 401: "Missing or invalid credentials",
               402: "The Twilio account cannot pay", 403: "Not allowed (or a bad signature)", 404: "Not found",
               409: "Conflict", 413: "Body too large", 415: "Unsupported media type",
               422: "Idempotency-Key reused with another request, or not processable", 426: "WebSocket only",
               429: "Rate limited (Retry-After)", 502: "Twilio answered with an error",
               503: "Unavailable (database outage: Retry-After)", 504: "Twilio did not answer in time"}
RESPONSES = {f"E{status}": {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
             for status, text in _ERROR_TEXT.items()}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "sub = the user id"},
    "twilioSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature",
                        "description": "Twilio's request signature over PUBLIC_BASE_URL + path + query + form"},
    "mediaSignature": {"type": "apiKey", "in": "query", "name": "sig",
                       "description": "HMAC of the media id and exp, as in the URL given to Twilio"},
    "metricsToken": {"type": "http", "scheme": "bearer", "description": "metrics.token, when one is set"},
}

# -- the routes ------------------------------------------------------------------------------------

PAGE = {"nextCursor": null(STR)}
SEND_ERRORS = errors(400, 402, 403, 409, 415, 422, 429, 502, 504)
UNCONFIRMED_SENT = ok(ref("Sent"), "Twilio's answer never came: unconfirmed until its status callback", "202")


def twilio_webhook(summary: str, fields: dict[str, Schema], required: tuple[str, ...], answers: str,
                   query_params: list[Schema] | None = None) -> Schema:
    """A route Twilio posts to: a signed form, answered with TwiML or 204."""
    form = {"type": "object", "properties": fields, "required": list(required),
            # Twilio adds fields over time: the form is open, unlike our JSON bodies.
            "additionalProperties": {"type": "string"}}
    content = {"text/xml": {"schema": STR}} if answers == "twiml" else None
    done = {"description": "TwiML" if content else "Recorded"}
    if content:
        done["content"] = content
    return op(summary, "Twilio webhooks", {"200" if content else "204": done, **errors(400, 403, 413, 415, 503)},
              parameters=query_params, security="twilioSignature",
              body={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}})


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
