"""Recorded greetings: PUT /api/numbers/{id}/greetings/{kind} (multipart, WAV or MP3, judged by
the bytes, size-limited), stored sealed like MMS media, and fetched by Twilio through a signed,
expiring URL (<Play>). Without one, the text-to-speech greeting is said instead.

The URL is PUBLIC_BASE_URL/greetings/{id}?exp=...&sig=...: an HMAC-SHA256 over the id and the
expiry with a key derived from the master key (its own derivation: a media link never opens a
greeting). Tampered or expired: 403.
"""

from __future__ import annotations

import uuid

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from commpro.appkeys import config_key, keyring_key, pool_key
from commpro.auth import user_id
from commpro.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationError
from commpro.messages.content import AVAILABLE, open_content, reading_key, seal
from commpro.numbers import greeting_store
from commpro.settings import Config
from commpro.signing import checked_id, signed_url
from commpro.validation import iso, parse_uuid

routes = web.RouteTableDef()
KINDS = ("voicemail", "after-hours")


def sniff_audio(data: bytes) -> str | None:
    """audio/wav or audio/mpeg from the bytes themselves; None for anything else."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    return None


GREETING_URL = b"commpro:greeting-url"


def signed_greeting_url(config: Config, greeting_id: object, now: float | None = None) -> str:
    return signed_url(config, "/greetings", GREETING_URL, greeting_id, config.voice.greeting_url_ttl_s, now)


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise NotFound("Greetings are 'voicemail' or 'after-hours'")
    return kind


async def _read_audio(request: web.Request, limit: int) -> tuple[bytes, str]:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType("Upload the greeting as multipart/form-data, in a part named 'file'")
    data: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):  # a nested multipart has no name to check
                raise BadRequest("Nested multipart bodies are not accepted")
            if part.name != "file":
                raise ValidationError(details={part.name or "": "unknown part; the audio goes in 'file'"})
            buf = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                buf += chunk
                if len(buf) > limit:
                    raise PayloadTooLarge(f"A greeting is limited to {limit} bytes")
            data = bytes(buf)
    except (ValueError, UnicodeDecodeError, AssertionError, HttpProcessingError):
        raise BadRequest("The multipart body is malformed") from None
    if not data:
        raise ValidationError(details={"file": "required: a WAV or MP3 file"})
    kind = sniff_audio(data)
    if kind is None:
        raise UnsupportedMediaType("A greeting must be WAV or MP3 (judged by the bytes)")
    return data, kind


@routes.put("/api/numbers/{id}/greetings/{kind}", name="put_greeting")
async def put_greeting(request: web.Request) -> web.Response:
    number_id, kind, user = parse_uuid(request.match_info["id"]), _kind(request), user_id(request)
    data, content_type = await _read_audio(request, request.config_dict[config_key].voice.greeting_max_bytes)
    greeting_id = uuid.uuid4()
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        key = await request.config_dict[keyring_key].data_key(conn, user, create=True)
        row = await greeting_store.put_greeting(conn, greeting_id, number_id, user, kind, content_type, len(data),
                                                seal(key, "greeting", user, greeting_id, data))
    if row is None:
        raise NotFound("No such number")
    return web.json_response({"kind": row["kind"], "contentType": row["content_type"],
                              "sizeBytes": row["size_bytes"], "updatedAt": iso(row["created_at"])})


@routes.delete("/api/numbers/{id}/greetings/{kind}", name="delete_greeting")
async def delete_greeting(request: web.Request) -> web.Response:
    number_id, kind = parse_uuid(request.match_info["id"]), _kind(request)
    async with request.config_dict[pool_key].acquire() as conn:
        deleted = await greeting_store.delete_greeting(conn, number_id, user_id(request), kind)
    if not deleted:
        raise NotFound("No such greeting")
    return web.Response(status=204)


@routes.get("/greetings/{id}", name="signed_greeting")
async def signed_greeting(request: web.Request) -> web.Response:
    """What Twilio's <Play> fetches: public, but only through a valid signed URL."""
    row_id = checked_id(request, request.config_dict[config_key], GREETING_URL, "greeting")
    async with request.config_dict[pool_key].acquire() as conn:
        row = await greeting_store.get_greeting(conn, row_id)
        key = await reading_key(request.config_dict[keyring_key], conn, row["user_id"]) if row else None
    if row is None:
        raise NotFound()
    data, state = open_content(key, "greeting", row["user_id"], row["id"], row["ciphertext"], row["nonce"],
                               row["created_at"])
    if state != AVAILABLE or data is None:
        raise NotFound(f"This greeting is {state}")
    return web.Response(body=data, content_type=row["content_type"], headers={"Cache-Control": "private, max-age=300"})
