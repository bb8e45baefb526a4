"""The Call API: place a bridged call, the history, one call, its recording, the mobile token."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from commpro.appkeys import config_key, keyring_key, pool_key, twilio_key
from commpro.auth import user_id
from commpro.calls import devices, service, store
from commpro.errors import Conflict, NotFound, ServiceUnavailable
from commpro.guards import Bind, idempotent
from commpro.keys import DataKey
from commpro.messages.content import AVAILABLE, open_content, reading_key
from commpro.numbers import store as numbers
from commpro.validation import Fields, decode_cursor, iso, json_body, next_cursor, parse_uuid

routes = web.RouteTableDef()
DIRECTIONS = ("inbound", "outbound")
TOKEN_TTL_S = 3600


def voicemail_json(row: asyncpg.Record, key: DataKey | None) -> dict[str, Any] | None:
    """null for a call that left no voicemail; else its transcript, opened with the user's key."""
    if not row["voicemail"]:
        return None
    text, state = open_content(key, "transcript", row["user_id"], row["id"], row["transcript_ciphertext"],
                               row["transcript_nonce"], row["transcript_at"] or row["created_at"])
    status = row["transcript_status"] or "none"
    if state != AVAILABLE:
        status = state  # erased with the user's key, or unreadable
    return {"transcript": text.decode() if text is not None else None, "transcriptStatus": status}


def call_json(row: asyncpg.Record, key: DataKey | None) -> dict[str, Any]:
    recording = None
    if row["recording_url"]:
        recording = {"url": f"/api/calls/{row['id']}/recording", "durationSec": row["recording_duration_s"]}
    return {
        "id": str(row["id"]),
        "sid": row["sid"],
        "direction": row["direction"],
        "from": row["from_number"],
        "to": row["to_number"],
        "status": row["status"],
        "createdAt": iso(row["created_at"]),
        "answeredAt": iso(row["answered_at"]),
        "endedAt": iso(row["ended_at"]),
        "durationSec": row["duration_s"],
        # A string, as Twilio gives it: money is not a float.
        "price": str(row["price"]) if row["price"] is not None else None,
        "priceUnit": row["price_unit"],
        "recording": recording,
        "voicemail": voicemail_json(row, key),
        "answeredBy": row["answered_by"],
        "errorCode": row["error_code"],
    }


@routes.post("/api/calls/initiate", name="initiate_call")
async def initiate_call(request: web.Request) -> web.Response:
    """201 with the call's SID once Twilio placed it; 202 `unconfirmed` when Twilio's answer
    never came (the call may still exist: its webhooks will tell)."""
    body = await json_body(request)
    fields = Fields(body, allowed=("from", "to"))
    from_number, to_number = fields.e164("from"), fields.e164("to")
    fields.check()
    state, user = request.config_dict, user_id(request)

    async def create(bind: Bind) -> tuple[int, dict[str, Any]]:
        return (await service.place_call(state, user, from_number, to_number, bind)).answer()

    async def replay(call_id: uuid.UUID) -> tuple[int, dict[str, Any]]:
        return (await service.reconcile_call(state, user, call_id)).answer()

    return await idempotent(request, "calls.initiate", body, create, replay)


# OFFSET costs what it skips; the cursor costs the same at any depth. Deep pages go by cursor.
MAX_OFFSET = 10_000


@routes.get("/api/calls", name="list_calls")
async def list_calls(request: web.Request) -> web.Response:
    fields = Fields(request.query, allowed=("limit", "offset", "cursor", "direction", "status", "since", "until"))
    limit = fields.integer("limit", required=False, low=1, high=200, default=50)
    offset = fields.integer("offset", required=False, low=0, default=0)
    if offset is not None and offset > MAX_OFFSET:
        fields.errors["offset"] = f"must be at most {MAX_OFFSET}: page further with cursor (each page's nextCursor)"
    direction = fields.choice("direction", DIRECTIONS, required=False)
    status = fields.choice("status", store.STATUSES, required=False)
    since, until = fields.timestamp("since"), fields.timestamp("until")
    if "cursor" in request.query and "offset" in request.query:
        fields.errors["cursor"] = "use either cursor or offset"
    fields.check()
    before = decode_cursor(request.query["cursor"]) if "cursor" in request.query else None
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_calls(conn, user_id(request), direction=direction, status=status, since=since,
                                      until=until, before=before, limit=limit, offset=offset)
        key = await reading_key(request.config_dict[keyring_key], conn, user_id(request))
    return web.json_response({"calls": [call_json(r, key) for r in rows], "nextCursor": next_cursor(rows, limit)})


@routes.get("/api/calls/token", name="call_token")
async def call_token(request: web.Request) -> web.Response:
    """A Twilio Access Token with a VoiceGrant, so the apps can place and receive calls."""
    settings = request.config_dict[config_key].twilio
    # The push credential is optional: a web client receives calls over its open connection.
    missing = [name for name, value in (
        ("TWILIO_API_KEY_SID", settings.api_key_sid), ("TWILIO_API_KEY_SECRET", settings.api_key_secret),
        ("TWILIO_TWIML_APP_SID", settings.twiml_app_sid),
    ) if not value]
    if missing:
        raise ServiceUnavailable("App calling is not configured: set " + ", ".join(missing))
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        owned = await numbers.list_numbers(conn, user)
        # An identity an operator gave one of the user's numbers wins; else one derived from the user id.
        identity = next((n["identity"] for n in owned if n["identity"]), None) or devices.derived_identity(user)
        if await devices.identity_used_elsewhere(conn, identity, user):
            raise Conflict("Your app identity is already used by another user")
        await devices.register_app(conn, user, identity)
    token = AccessToken(settings.account_sid, settings.api_key_sid, settings.api_key_secret,
                        identity=identity, ttl=TOKEN_TTL_S)
    token.add_grant(VoiceGrant(outgoing_application_sid=settings.twiml_app_sid, incoming_allow=True,
                               push_credential_sid=settings.push_credential_sid or None))
    return web.json_response({"token": token.to_jwt(), "identity": identity, "ttlSec": TOKEN_TTL_S})


@routes.delete("/api/calls/token", name="unregister_app")
async def unregister_app(request: web.Request) -> web.Response:
    """Sign the app out: inbound calls ring it no more (an operator's --identity still rings).
    Idempotent: 204 whether or not it was registered."""
    async with request.config_dict[pool_key].acquire() as conn:
        await devices.unregister_app(conn, user_id(request))
    return web.Response(status=204)


async def _own_call(request: web.Request) -> asyncpg.Record:
    call_id = parse_uuid(request.match_info["id"])
    async with request.config_dict[pool_key].acquire() as conn:
        row = await store.get_call(conn, user_id(request), call_id)
    if row is None:
        raise NotFound("No such call")
    return row


@routes.get("/api/calls/{id}", name="get_call")
async def get_call(request: web.Request) -> web.Response:
    row = await _own_call(request)
    async with request.config_dict[pool_key].acquire() as conn:
        key = await reading_key(request.config_dict[keyring_key], conn, row["user_id"])
    return web.json_response(call_json(row, key))


@routes.get("/api/calls/{id}/recording", name="call_recording")
async def call_recording(request: web.Request) -> web.StreamResponse:
    """The audio, streamed from Twilio: the client never sees Twilio's URL or credentials."""
    fields = Fields(request.query, allowed=("format",))
    fmt = fields.choice("format", ("wav", "mp3"), required=False) or "wav"
    fields.check()
    row = await _own_call(request)
    if not row["recording_url"]:
        raise NotFound("This call has no recording")
    url = row["recording_url"] + (".mp3" if fmt == "mp3" else "")
    upstream = await request.config_dict[twilio_key].open_media(url)
    try:
        response = web.StreamResponse(headers={"Content-Type": upstream.content_type,
                                               "Cache-Control": "private, no-store"})
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()
