"""The Call API: place a bridged call, the history, one call, its recording, the mobile token."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from commpro.appkeys import config_key, pool_key, twilio_key
from commpro.auth import user_id
from commpro.calls import store, twiml
from commpro.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from commpro.events import store as events
from commpro.guards import idempotent, rate_limit
from commpro.numbers import store as numbers
from commpro.validation import Fields, decode_cursor, iso, json_body, next_cursor, parse_uuid

routes = web.RouteTableDef()
DIRECTIONS = ("inbound", "outbound")
TOKEN_TTL_S = 3600


def call_json(row: asyncpg.Record) -> dict[str, Any]:
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
        "voicemail": row["voicemail"],
        "errorCode": row["error_code"],
    }


@routes.post("/api/calls/initiate", name="initiate_call")
async def initiate_call(request: web.Request) -> web.Response:
    body = await json_body(request)
    fields = Fields(body, allowed=("from", "to"))
    from_number, to_number = fields.e164("from"), fields.e164("to")
    fields.check()
    config = request.config_dict[config_key]
    pool = request.config_dict[pool_key]
    user = user_id(request)

    async def create() -> tuple[int, dict[str, Any]]:
        async with pool.acquire() as conn:
            number = await numbers.get_owned_number(conn, user, from_number)
        if number is None:
            raise Forbidden("'from' is not one of your numbers", details={"from": "not yours"})
        # The user's phone rings first, or else the app; the destination is dialled on answer.
        first_leg = number["forward_to"] or (f"client:{number['identity']}" if number["identity"] else None)
        if first_leg is None:
            raise Unprocessable("This number has neither a forward-to phone nor an app identity to ring first")
        await rate_limit(request, "calls.initiate", config.calls.rate_per_minute)
        async with pool.acquire() as conn, conn.transaction():
            call = await store.insert_outbound_call(conn, user, number["id"], from_number, to_number)
            await events.publish(conn, user, "call.created",
                                 {"callId": str(call["id"]), "direction": "outbound", "status": "initiated"})
        gateway = request.config_dict[twilio_key]
        try:
            created = await gateway.call("calls.create", lambda: gateway.client.calls.create_async(
                to=first_leg,
                from_=from_number,
                url=twiml.webhook_url(config, "/webhook/voice/outbound", callId=call["id"]),
                method="POST",
                status_callback=twiml.webhook_url(config, "/webhook/voice/status", callId=call["id"], leg="user"),
                status_callback_event=twiml.ALL_EVENTS.split(),
                status_callback_method="POST",
                timeout=number["ring_timeout_s"],
            ))
        except AppError as exc:
            async with pool.acquire() as conn:
                await store.fail_call(conn, call["id"], getattr(exc, "twilio_code", None), exc.message)
            raise
        async with pool.acquire() as conn:
            await store.set_call_sid(conn, call["id"], created.sid)
        return 201, {"callId": str(call["id"]), "status": "initiated", "sid": created.sid}

    return await idempotent(request, "calls.initiate", body, create)


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
    status = fields.choice("status", store.STATUS_RANK, required=False)
    since, until = fields.timestamp("since"), fields.timestamp("until")
    if "cursor" in request.query and "offset" in request.query:
        fields.errors["cursor"] = "use either cursor or offset"
    fields.check()
    before = decode_cursor(request.query["cursor"]) if "cursor" in request.query else None
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_calls(conn, user_id(request), direction=direction, status=status, since=since,
                                      until=until, before=before, limit=limit, offset=offset)
    return web.json_response({"calls": [call_json(r) for r in rows], "nextCursor": next_cursor(rows, limit)})


@routes.get("/api/calls/token", name="call_token")
async def call_token(request: web.Request) -> web.Response:
    """A Twilio Access Token with a VoiceGrant, so the apps can place and receive calls."""
    settings = request.config_dict[config_key].twilio
    missing = [name for name, value in (
        ("TWILIO_API_KEY_SID", settings.api_key_sid), ("TWILIO_API_KEY_SECRET", settings.api_key_secret),
        ("TWILIO_TWIML_APP_SID", settings.twiml_app_sid), ("TWILIO_PUSH_CREDENTIAL_SID", settings.push_credential_sid),
    ) if not value]
    if missing:
        raise ServiceUnavailable("Mobile calling is not configured: set " + ", ".join(missing))
    async with request.config_dict[pool_key].acquire() as conn:
        owned = await numbers.list_numbers(conn, user_id(request))
    identity = next((n["identity"] for n in owned if n["identity"]), None)
    if identity is None:
        raise Conflict("None of your numbers has an app identity (commpro numbers add ... --identity NAME)")
    token = AccessToken(settings.account_sid, settings.api_key_sid, settings.api_key_secret,
                        identity=identity, ttl=TOKEN_TTL_S)
    token.add_grant(VoiceGrant(outgoing_application_sid=settings.twiml_app_sid, incoming_allow=True,
                               push_credential_sid=settings.push_credential_sid))
    return web.json_response({"token": token.to_jwt(), "identity": identity, "ttlSec": TOKEN_TTL_S})


async def _own_call(request: web.Request) -> asyncpg.Record:
    call_id = parse_uuid(request.match_info["id"])
    async with request.config_dict[pool_key].acquire() as conn:
        row = await store.get_call(conn, user_id(request), call_id)
    if row is None:
        raise NotFound("No such call")
    return row


@routes.get("/api/calls/{id}", name="get_call")
async def get_call(request: web.Request) -> web.Response:
    return web.json_response(call_json(await _own_call(request)))


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
