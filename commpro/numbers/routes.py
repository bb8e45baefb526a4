"""GET /api/numbers and PATCH /api/numbers/{id}: the user's numbers and their inbound routing."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.auth import user_id
from commpro.errors import NotFound, ValidationError
from commpro.numbers import hours, store
from commpro.settings import VoiceSettings
from commpro.validation import Fields, iso, json_body, parse_uuid

routes = web.RouteTableDef()
ROUTING = ("forward", "voicemail", "reject")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
# JSON field -> column
FIELDS = {
    "routing": "routing", "ringTimeoutSec": "ring_timeout_s", "greetingText": "greeting_text",
    "greetingVoice": "greeting_voice", "greetingLanguage": "greeting_language",
    "blockedNumbers": "blocked_numbers", "forwardTo": "forward_to", "voicemailOnNoAnswer": "voicemail_on_no_answer",
    "screening": "screening", "recordCalls": "record_calls", "recordingAnnouncement": "recording_announcement",
    "businessHours": "business_hours",
}


def number_json(row: asyncpg.Record, voice: VoiceSettings, now: datetime | None = None) -> dict[str, Any]:
    is_open, changes_at = hours.status(row["business_hours"], now or datetime.now(UTC))
    return {
        "id": str(row["id"]),
        "number": row["e164"],
        "identity": row["identity"],
        "forwardTo": row["forward_to"],
        "routing": row["routing"],
        "ringTimeoutSec": row["ring_timeout_s"],
        "voicemailOnNoAnswer": row["voicemail_on_no_answer"],
        "screening": row["screening"],
        "recordCalls": row["record_calls"],
        "recordingAnnouncement": row["recording_announcement"] or voice.recording_announcement,
        "greeting": {
            "text": row["greeting_text"],
            "voice": row["greeting_voice"] or voice.greeting_voice,
            "language": row["greeting_language"] or voice.greeting_language,
        },
        "blockedNumbers": list(row["blocked_numbers"]),
        "businessHours": row["business_hours"],
        # Recorded greetings (played instead of the text): which kinds exist.
        "recordedGreetings": sorted(row["greetings"] or {}),
        "open": is_open,
        "openChangesAt": iso(changes_at),
        "createdAt": row["created_at"].isoformat(),
    }


@routes.get("/api/numbers", name="list_numbers")
async def list_numbers(request: web.Request) -> web.Response:
    voice = request.config_dict[config_key].voice
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_numbers(conn, user_id(request))
    return web.json_response({"numbers": [number_json(r, voice) for r in rows]})


@routes.patch("/api/numbers/{id}", name="update_number")
async def update_number(request: web.Request) -> web.Response:
    number_id = parse_uuid(request.match_info["id"])
    body = await json_body(request)
    fields = Fields(body, allowed=FIELDS)
    values = {
        "routing": fields.choice("routing", ROUTING, required=False),
        "ringTimeoutSec": fields.integer("ringTimeoutSec", required=False, low=5, high=120),
        "greetingText": fields.string("greetingText", required=False, max_len=500, nullable=True),
        "greetingVoice": fields.string("greetingVoice", required=False, max_len=64, nullable=True),
        "greetingLanguage": fields.string("greetingLanguage", required=False, max_len=16, nullable=True),
        "blockedNumbers": fields.e164_list("blockedNumbers", required=False),
        "forwardTo": fields.e164("forwardTo", required=False, nullable=True),
        "voicemailOnNoAnswer": fields.boolean("voicemailOnNoAnswer", required=False),
        "screening": fields.boolean("screening", required=False),
        "recordCalls": fields.boolean("recordCalls", required=False),
        "recordingAnnouncement": fields.string("recordingAnnouncement", required=False, max_len=500, nullable=True),
    }
    values["businessHours"] = None  # null clears the schedule: always open
    if body.get("businessHours") is not None:
        try:
            values["businessHours"] = hours.validate(body["businessHours"])
        except ValueError as exc:
            fields.errors["businessHours"] = str(exc)
    language = values["greetingLanguage"]
    if language is not None and not _LANGUAGE.match(language):
        fields.errors["greetingLanguage"] = "must be a language tag such as fr-FR"
    if not body:
        raise ValidationError("Nothing to change", details={name: "optional" for name in FIELDS})
    fields.check()
    # Only what the request named changes; an explicit null clears a nullable field.
    changes = {FIELDS[name]: values[name] for name in FIELDS if name in body}
    async with request.config_dict[pool_key].acquire() as conn:
        row = await store.update_number(conn, user_id(request), number_id, changes)
    if row is None:
        raise NotFound("No such number")
    return web.json_response(number_json(row, request.config_dict[config_key].voice))
