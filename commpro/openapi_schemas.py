"""The shapes the OpenAPI document (commpro/openapi.py) is built from: small helpers, and the
components shared by many routes (SCHEMAS, RESPONSES, SECURITY_SCHEMES)."""

from __future__ import annotations

from typing import Any

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
