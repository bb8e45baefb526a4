"""Media: type sniffing, the signed URLs Twilio fetches our MMS media from, and the background
fetch of inbound media.

Twilio gets, for each uploaded file, PUBLIC_BASE_URL/media/{id}?exp=...&sig=...: an HMAC-SHA256
over the id and the expiry, with a key derived from the master key. It serves the decrypted
bytes until it expires; a tampered or expired URL is a 403.
"""

from __future__ import annotations

import uuid

import structlog
from aiohttp import web

from commpro.appkeys import config_key, keyring_key, pool_key, twilio_key
from commpro.errors import AppError, NotFound
from commpro.jobs import Backoff, GiveUp, Job, Kind, Retry
from commpro.messages import erasure_store, media_store
from commpro.messages.content import AVAILABLE, open_content, reading_key, seal
from commpro.settings import Config
from commpro.signing import checked_id, signed_url

log = structlog.get_logger("commpro.media")
routes = web.RouteTableDef()
MEDIA_FETCH = "media-fetch"

# Magic bytes of the types MMS may carry; the Content-Type a client sends is not trusted.
SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
              (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))




def sniff(data: bytes) -> str | None:
    return next((kind for magic, kind in SIGNATURES if data.startswith(magic)), None)


MEDIA_URL = b"commpro:media-url"


def signed_media_url(config: Config, media_id: uuid.UUID, now: float | None = None) -> str:
    return signed_url(config, "/media", MEDIA_URL, media_id, config.messages.media_url_ttl_s, now)


@routes.get("/media/{id}", name="signed_media")
async def signed_media(request: web.Request) -> web.Response:
    """What Twilio fetches for an outbound MMS: public, but only through a valid signed URL."""
    media_uuid = checked_id(request, request.config_dict[config_key], MEDIA_URL, "media")
    async with request.config_dict[pool_key].acquire() as conn:
        row = await media_store.get_media_by_id(conn, media_uuid)
        if row is None or row["is_link"] or row["fetch_state"] != "done":
            raise NotFound()
        key = await reading_key(request.config_dict[keyring_key], conn, row["user_id"])
    return media_response(row, key, cache="private, max-age=300")


def media_response(row, key, cache: str = "private, no-store") -> web.Response:
    """The decrypted bytes of a stored media row, or the reason there are none."""
    data, state = open_content(key, "media", row["user_id"], row["id"], row["ciphertext"], row["nonce"],
                               row["created_at"])
    if state != AVAILABLE or data is None:
        raise NotFound(f"This media is {state}" if state != AVAILABLE else "This media is not available yet")
    return web.Response(body=data, content_type=row["content_type"], headers={"Cache-Control": cache})


# -- inbound media, fetched after the webhook has been answered --------------------------------


async def fetch_media(app: web.Application, job: Job) -> None:
    """One inbound media file: download it, store it encrypted."""
    config, pool, gateway = app[config_key], app[pool_key], app[twilio_key]
    media_id = uuid.UUID(job.key)
    async with pool.acquire() as conn:
        row = await media_store.get_pending_media(conn, media_id)
    if row is None:  # fetched already, or gone with its message
        return
    try:
        data, content_type = await _download(gateway, row["source_url"], config.messages.max_fetch_bytes)
    except (_Refused, AppError) as exc:
        refused = isinstance(exc, _Refused)
        error = str(exc) if refused else exc.message
        async with pool.acquire() as conn, conn.transaction():
            await media_store.media_fetch_failed(conn, media_id, error, final=refused)
            if refused and config.messages.erase_at_twilio:  # the message's other media may be stored
                await erasure_store.enqueue_if_stored(conn, row["message_id"])
        raise (GiveUp if refused else Retry)(error) from None
    async with pool.acquire() as conn, conn.transaction():
        key = await app[keyring_key].data_key(conn, row["user_id"], create=True)
        sealed = seal(key, "media", row["user_id"], row["id"], data)
        await media_store.store_fetched_media(conn, row["id"], sealed, len(data), content_type)
        if config.messages.erase_at_twilio:
            await erasure_store.enqueue_if_stored(conn, row["message_id"])


class _Refused(Exception):
    """Not worth retrying: too large, or not a media type."""


async def _download(gateway, url: str, limit: int) -> tuple[bytes, str]:
    resp = await gateway.open_media(url)
    try:
        content_type = resp.content_type
        if resp.content_length is not None and resp.content_length > limit:
            raise _Refused(f"larger than {limit} bytes")
        data = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise _Refused(f"larger than {limit} bytes")
    finally:
        resp.release()
    return bytes(data), sniff(bytes(data)) or content_type


def media_fetch(config: Config) -> Kind:
    """The fetcher; the SMS webhook wakes it as soon as media is waiting."""
    backoff = Backoff(first_s=config.messages.fetch_retry_first_s, max_s=3600, jitter=config.jobs.jitter,
                      max_attempts=config.messages.fetch_attempts)

    async def gave_up(conn, job: Job, reason: str) -> None:
        message_id = await media_store.media_gave_up(conn, uuid.UUID(job.key))
        if message_id is not None and config.messages.erase_at_twilio:
            # The rest of the message at Twilio may be erased now (this file stays: the only copy).
            await erasure_store.enqueue_if_stored(conn, message_id)

    return Kind(MEDIA_FETCH, fetch_media, backoff, poll_s=config.messages.fetch_interval_s, batch=10,
                lease_s=config.jobs.lease_s, gave_up=gave_up)
