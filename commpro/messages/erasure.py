"""Erasure that reaches Twilio: Twilio keeps every body and media file until they are deleted
there, so encrypting CommPro's copy does not erase the user's content.

The outbox (erasure_store, table twilio_erasures) holds one row per message to erase, with
what to erase and how far it came (`commpro keys erasure`). It is written in the transaction
that makes the erasure safe: an inbound message once its media is stored, an outbound one once
final, or every message of a user by `commpro keys shred`; the same statement puts a
"twilio-erasure" job on the queue (commpro.jobs), which runs `erase_at_twilio` with the queue's
lease, backoff and give-up (messages.erase_retry_first_s, messages.erase_attempts).
"""

from __future__ import annotations

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import pool_key, twilio_key
from commpro.errors import AppError, NotFound
from commpro.jobs import Backoff, Job, Kind, Retry
from commpro.messages import erasure_store
from commpro.settings import Config

log = structlog.get_logger("commpro.erasure")


async def erase_at_twilio(app: web.Application, row: asyncpg.Record) -> None:
    """Delete the message's media at Twilio (those listed in the row, or every one Twilio lists),
    then redact its body (POST Messages/{sid} with Body=""). Idempotent: what is already gone
    at Twilio (404) counts as erased. Raises AppError when Twilio should be asked again."""
    gateway = app[twilio_key]
    message = gateway.client.messages(row["message_sid"])
    media_sids = row["media_sids"]
    try:
        if media_sids is None:
            listed = await gateway.call("messages.media.list", lambda: message.media.list_async())
            media_sids = [m.sid for m in listed]
        for media_sid in media_sids:
            try:
                await gateway.call("messages.media.delete",
                                   lambda media_sid=media_sid: message.media(media_sid).delete_async())
            except NotFound:
                pass
        await gateway.call("messages.redact", lambda: message.update_async(body=""))
    except NotFound:  # the message itself is gone at Twilio: nothing left to erase
        log.info("erasure_message_gone", message_sid=row["message_sid"])


async def erase_one(app: web.Application, job: Job) -> None:
    """The job: one message's erasure at Twilio, keyed by its MessageSid."""
    pool = app[pool_key]
    async with pool.acquire() as conn:
        row = await erasure_store.get_pending(conn, job.key)
    if row is None:  # done already
        return
    try:
        await erase_at_twilio(app, row)
    except AppError as exc:
        async with pool.acquire() as conn:
            await erasure_store.record_failure(conn, job.key, exc.message)
        raise Retry(f"erasure at Twilio failed: {exc.code}") from None
    async with pool.acquire() as conn:
        done = await erasure_store.mark_done(conn, row)
    if not done:
        raise Retry("a shred asked for more meanwhile")
    log.info("erased_at_twilio", message_sid=job.key, reason=row["reason"])


async def _gave_up(conn: asyncpg.Connection, job: Job, reason: str) -> None:
    await erasure_store.record_failure(conn, job.key, reason, gave_up=True)


def twilio_erasure(config: Config) -> Kind:
    settings = config.messages
    backoff = Backoff(first_s=settings.erase_retry_first_s, max_s=3600, jitter=config.jobs.jitter,
                      max_attempts=settings.erase_attempts)
    return Kind(erasure_store.ERASURE_KIND, erase_one, backoff, poll_s=settings.erase_interval_s,
                lease_s=config.jobs.lease_s, gave_up=_gave_up)
