"""Erasure that reaches Twilio: Twilio keeps every body and media file until they are deleted
there, so encrypting CommPro's copy does not erase the user's content.

A durable outbox (erasure_store, table twilio_erasures) holds one row per message to erase. It
is written in the transaction that makes the erasure safe: an inbound message once its media is
stored, an outbound one once final, or every message of a user by `commpro keys shred`. A
background loop claims due rows with a lease and runs `erase_at_twilio` on each, retrying with
a doubling delay up to messages.erase_attempts. The per-item function is apart from the claim
loop so that it can move onto a general job mechanism as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key, twilio_key
from commpro.background import periodic
from commpro.errors import AppError, NotFound
from commpro.messages import erasure_store

log = structlog.get_logger("commpro.erasure")
BATCH = 20
LEASE_S = 120.0


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


async def erase_due(app: web.Application, now: datetime | None = None) -> int:
    """One round: claim what is due, erase each at Twilio; return how many were erased."""
    settings, pool = app[config_key].messages, app[pool_key]
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        due = await erasure_store.claim_due(conn, now, BATCH, LEASE_S)
    erased = 0
    for row in due:
        try:
            await erase_at_twilio(app, row)
        except AppError as exc:
            attempts = row["attempts"] + 1
            give_up = attempts >= settings.erase_attempts
            next_at = now + timedelta(seconds=settings.erase_retry_first_s * 2 ** (attempts - 1))
            async with pool.acquire() as conn:
                await erasure_store.reschedule(conn, row["message_sid"], next_at, exc.message, give_up)
            log.warning("erasure_failed", message_sid=row["message_sid"], attempts=attempts, error=exc.code,
                        gave_up=give_up)
            continue
        async with pool.acquire() as conn:
            await erasure_store.mark_done(conn, row["message_sid"])
        log.info("erased_at_twilio", message_sid=row["message_sid"], reason=row["reason"])
        erased += 1
    return erased


def erasure_job(interval_s: float):
    async def job(app: web.Application) -> None:
        await erase_due(app)

    return periodic("twilio-erasure", interval_s, job)
