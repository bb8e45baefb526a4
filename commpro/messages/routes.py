"""The Messaging API: send SMS and MMS, conversations, reading, media."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from commpro.appkeys import config_key, keyring_key, pool_key
from commpro.auth import user_id
from commpro.contacts.names import contact_name
from commpro.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
)
from commpro.guards import Bind, Create, Replay, idempotent
from commpro.keys import DataKey
from commpro.messages import media_store, service, store
from commpro.messages.content import open_content, reading_key
from commpro.messages.media import media_response, sniff
from commpro.messages.sms import estimate
from commpro.validation import Fields, decode_cursor, iso, json_body, next_cursor, parse_uuid, refuse_nul

routes = web.RouteTableDef()
MAX_BODY = 1600
MAX_MEDIA = 10


def message_json(row: asyncpg.Record, key: DataKey | None, media: list[dict[str, Any]]) -> dict[str, Any]:
    body, state = open_content(key, "body", row["user_id"], row["id"], row["body_ciphertext"], row["body_nonce"],
                               row["created_at"])
    return {
        "id": str(row["id"]),
        "direction": row["direction"],
        "from": row["from_number"],
        "to": row["to_number"],
        "body": body.decode() if body is not None else None,
        # "erased" once the user's key was shredded; "unreadable" if the ciphertext was tampered with.
        "content": state,
        "media": media,
        "status": row["status"],
        "errorCode": row["error_code"],
        "errorMessage": row["error_message"],
        # Twilio's count (billed); null until Twilio has given it.
        "segments": row["num_segments"],
        "readAt": iso(row["read_at"]),
        "createdAt": iso(row["created_at"]),
    }


def media_json(row: asyncpg.Record, key: DataKey | None) -> dict[str, Any]:
    url = f"/api/messages/{row['message_id']}/media/{row['id']}"
    if row["is_link"]:
        link, _ = open_content(key, "media", row["user_id"], row["id"], row["ciphertext"], row["nonce"],
                               row["created_at"])
        url = link.decode() if link is not None else None
    return {"id": str(row["id"]), "contentType": row["content_type"], "size": row["size_bytes"], "url": url,
            "state": row["fetch_state"]}


# -- sending -----------------------------------------------------------------------------------


def _sender(request: web.Request, from_number: str, to_number: str, body: str,
            uploads: list[tuple[bytes, str]], links: list[str]) -> tuple[Create, Replay]:
    """The create and replay that idempotent() runs for one send request."""
    state, user = request.config_dict, user_id(request)

    async def create(bind: Bind) -> tuple[int, dict[str, Any]]:
        return (await service.send_message(state, user, from_number, to_number, body, uploads, links,
                                           bind)).answer()

    async def replay(message_id: uuid.UUID) -> tuple[int, dict[str, Any]]:
        return (await service.reconcile_message(state, user, message_id)).answer()

    return create, replay


@routes.post("/api/messages/send", name="send_message")
async def send_message(request: web.Request) -> web.Response:
    body = await json_body(request)
    fields = Fields(body, allowed=("from", "to", "body"))
    from_number, to_number = fields.e164("from"), fields.e164("to")
    text = fields.string("body", min_len=1, max_len=MAX_BODY)
    fields.check()
    return await idempotent(request, "messages.send", body, *_sender(request, from_number, to_number, text, [], []))


@routes.post("/api/messages/preview", name="preview_message")
async def preview_message(request: web.Request) -> web.Response:
    """What a body would cost, before sending: an estimate for a counter in the apps. The count
    Twilio bills is the one stored with each message."""
    fields = Fields(await json_body(request), allowed=("body",))
    text = fields.string("body", min_len=0, max_len=MAX_BODY)
    fields.check()
    result = estimate(text)
    return web.json_response({"segments": result.segments, "encoding": result.encoding,
                              "characters": result.characters})


@routes.post("/api/messages/send-mms", name="send_mms")
async def send_mms(request: web.Request) -> web.Response:
    """JSON {from, to, body?, mediaUrls}, or multipart/form-data with files named `media`."""
    if request.content_type == "multipart/form-data":
        data, uploads = await _read_multipart(request)
        links: list[str] = []
        # The request's identity for Idempotency-Key: the fields and each file's digest.
        identity = {**data, "media": [hashlib.sha256(d).hexdigest() for d, _ in uploads]}
    else:
        data = await json_body(request)
        uploads, links, identity = [], data.get("mediaUrls"), data
    fields = Fields(data, allowed=("from", "to", "body", "mediaUrls"))
    from_number, to_number = fields.e164("from"), fields.e164("to")
    text = fields.string("body", required=False, min_len=0, max_len=MAX_BODY) or ""
    if request.content_type != "multipart/form-data" and (
            not isinstance(links, list) or not 1 <= len(links) <= MAX_MEDIA
            or not all(isinstance(u, str) and u.startswith("https://") and len(u) <= 2000 for u in links)):
        fields.errors["mediaUrls"] = f"must be a list of 1 to {MAX_MEDIA} https URLs"
    fields.check()
    return await idempotent(request, "messages.send-mms", identity,
                            *_sender(request, from_number, to_number, text, uploads, links or []))


async def _read_multipart(request: web.Request) -> tuple[dict[str, str], list[tuple[bytes, str]]]:
    limit = request.config_dict[config_key].messages.max_upload_bytes
    fields: dict[str, str] = {}
    uploads: list[tuple[bytes, str]] = []
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):  # a nested multipart has no name to check
                raise BadRequest("Nested multipart bodies are not accepted")
            if part.name == "media":
                data = bytearray()
                while chunk := await part.read_chunk(64 * 1024):
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(f"Media files are limited to {limit} bytes in all")
                    data += chunk
                kind = sniff(bytes(data))
                if kind is None:
                    raise UnsupportedMediaType("Media must be JPEG, PNG or GIF (judged by the bytes)")
                uploads.append((bytes(data), kind))
            elif part.name in ("from", "to", "body"):
                fields[part.name] = (await part.read(decode=True)).decode("utf-8")
            else:
                fields[part.name or ""] = ""  # reported as an unknown field
    except (ValueError, UnicodeDecodeError, AssertionError, HttpProcessingError):
        raise BadRequest("The multipart body is malformed") from None
    refuse_nul(fields, "The multipart fields")
    if not uploads:
        raise ValidationError(details={"media": "at least one file"})
    if len(uploads) > MAX_MEDIA:
        raise ValidationError(details={"media": f"at most {MAX_MEDIA} files"})
    return fields, uploads


# -- reading -----------------------------------------------------------------------------------


def _page(request: web.Request, cursor_name: str) -> tuple[int, tuple[datetime, uuid.UUID] | None]:
    fields = Fields(request.query, allowed=("limit", cursor_name))
    limit = fields.integer("limit", required=False, low=1, high=200, default=50)
    fields.check()
    before = decode_cursor(request.query[cursor_name], cursor_name) if cursor_name in request.query else None
    return limit, before


@routes.get("/api/messages/conversations", name="list_conversations")
async def list_conversations(request: web.Request) -> web.Response:
    limit, before = _page(request, "cursor")
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_conversations(conn, user, before, limit)
        key = await reading_key(request.config_dict[keyring_key], conn, user)
    conversations = []
    for row in rows:
        last = message_json(row, key, [])
        conversations.append({
            "contactId": str(row["contact_id"]),
            "phoneNumber": row["phone_number"],
            "name": contact_name(key, row, "contact_id"),
            "blocked": row["blocked"],
            "optedOut": row["opted_out"],
            "lastMessage": {k: last[k] for k in ("id", "body", "content", "direction", "status", "createdAt")}
            | {"mediaCount": row["num_media"]},
            "unreadCount": row["unread_count"],
            "lastMessageAt": iso(row["last_message_at"]),
        })
    return web.json_response({"conversations": conversations,
                              "nextCursor": next_cursor(rows, limit, "last_message_at", "contact_id")})


@routes.get("/api/messages/conversations/{contactId}", name="get_conversation")
async def get_conversation(request: web.Request) -> web.Response:
    contact_id = parse_uuid(request.match_info["contactId"])
    limit, before = _page(request, "before")
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        contact = await store.get_contact(conn, user, contact_id)
        if contact is None:
            raise NotFound("No such conversation")
        rows = await store.list_messages(conn, user, contact_id, before, limit)
        media_rows = await media_store.list_media(conn, user, [r["id"] for r in rows])
        key = await reading_key(request.config_dict[keyring_key], conn, user)
    media: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for m in media_rows:
        media.setdefault(m["message_id"], []).append(media_json(m, key))
    return web.json_response({
        "contact": {"id": str(contact["id"]), "phoneNumber": contact["phone_number"],
                    "name": contact_name(key, contact), "blocked": contact["blocked"],
                    "optedOut": contact["opted_out"]},
        "messages": [message_json(r, key, media.get(r["id"], [])) for r in rows],
        "nextCursor": next_cursor(rows, limit),
    })


@routes.put("/api/messages/conversations/{contactId}/read", name="read_conversation")
async def read_conversation(request: web.Request) -> web.Response:
    contact_id = parse_uuid(request.match_info["contactId"])
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        found = await store.mark_conversation_read(conn, user_id(request), contact_id)
    if not found:
        raise NotFound("No such conversation")
    return web.json_response({"contactId": str(contact_id), "unreadCount": 0})


@routes.put("/api/messages/{id}/read", name="read_message")
async def read_message(request: web.Request) -> web.Response:
    message_id = parse_uuid(request.match_info["id"])
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        found, read_at = await store.mark_read(conn, user_id(request), message_id)
    if not found:
        raise NotFound("No such message")
    return web.json_response({"id": str(message_id), "readAt": iso(read_at)})


@routes.get("/api/messages/{id}/media/{mediaId}", name="message_media")
async def message_media(request: web.Request) -> web.Response:
    message_id, media_id = parse_uuid(request.match_info["id"]), parse_uuid(request.match_info["mediaId"])
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        row = await media_store.get_media(conn, user, message_id, media_id)
        if row is None or row["is_link"]:
            raise NotFound("No such media")
        key = await reading_key(request.config_dict[keyring_key], conn, user)
    return media_response(row, key)
