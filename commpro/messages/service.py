"""Sending an SMS or MMS: the one place that decides what Twilio's answer, or its absence,
means for the message (the same three outcomes as placing a call, see calls/service.py).

The message is encrypted and inserted with its conversation, and bound to the request's
Idempotency-Key, before Twilio is asked. A create Twilio never answered leaves the message
`unconfirmed` until its status callback (which carries our messageId) adopts it, or the sweep
ends it as never confirmed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from commpro.appkeys import config_key, keyring_key, pool_key, twilio_key
from commpro.calls.twiml import webhook_url
from commpro.errors import AppError, Conflict, Forbidden, NotFound
from commpro.events import store as events
from commpro.guards import Bind, spend
from commpro.ids import uuid7
from commpro.messages import media_store, store
from commpro.messages.content import seal
from commpro.messages.media import signed_media_url
from commpro.messages.sms import encoding_and_segments, twilio_count
from commpro.numbers import store as numbers
from commpro.twilio_gateway import TwilioError, TwilioUnanswered

log = structlog.get_logger("commpro.messages")
OPTED_OUT_CODE = 21610


@dataclass(frozen=True)
class Outcome:
    """A message Twilio took (201) or one whose create it never answered (202, `unconfirmed`)."""

    message_id: uuid.UUID
    status: str
    sid: str | None
    segments: int | None
    encoding: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Outcome:
        return cls(row["id"], row["status"], row["sid"], row["num_segments"], row["encoding"])

    def answer(self) -> tuple[int, dict[str, Any]]:
        code = 202 if self.status == "unconfirmed" else 201
        return code, {"messageId": str(self.message_id), "status": self.status, "sid": self.sid,
                      "segments": self.segments, "encoding": self.encoding}


async def send_message(state: Mapping, user: str, from_number: str, to_number: str, body: str,
                       uploads: list[tuple[bytes, str]], links: list[str], bind: Bind) -> Outcome:
    """Validate, encrypt, insert with the conversation in one transaction, then ask Twilio.
    Raises the refusal as an AppError; returns sent or unconfirmed."""
    config, pool, keyring = state[config_key], state[pool_key], state[keyring_key]
    async with pool.acquire() as conn:
        number = await numbers.get_owned_number(conn, user, from_number)
    if number is None:
        raise Forbidden("'from' is not one of your numbers", details={"from": "not yours"})
    await spend(pool, user, "messages.send", config.messages.rate_per_minute)
    encoding, _ = encoding_and_segments(body)
    message_id = uuid7()
    media_ids = [uuid.uuid4() for _ in uploads]
    async with pool.acquire() as conn, conn.transaction():
        contact = await store.upsert_contact(conn, user, to_number)
        if contact["opted_out"]:
            raise Conflict("The recipient has opted out (STOP): they must text START first")
        key = await keyring.data_key(conn, user, create=True)
        sealed = seal(key, "body", user, message_id, body.encode()) if body else None
        await store.insert_outbound(conn, message_id, user, contact["id"], number["id"], from_number, to_number,
                                    sealed, encoding, len(uploads) + len(links))
        for position, (media_id, (data, content_type)) in enumerate(zip(media_ids, uploads, strict=True)):
            await media_store.insert_media(conn, media_id, message_id, user, content_type, len(data),
                                           seal(key, "media", user, media_id, data), is_link=False, position=position)
        for position, link in enumerate(links):
            link_id = uuid.uuid4()
            await media_store.insert_media(conn, link_id, message_id, user, None, None,
                                           seal(key, "media", user, link_id, link.encode()), is_link=True,
                                           position=position)
        await bind(conn, message_id)
    gateway = state[twilio_key]
    media_urls = links + [signed_media_url(config, media_id) for media_id in media_ids]
    try:
        created = await gateway.call("messages.create", lambda: gateway.client.messages.create_async(
            to=to_number, from_=from_number, body=body or None, media_url=media_urls or None,
            status_callback=webhook_url(config, "/webhook/status", messageId=message_id),
        ))
    except TwilioUnanswered as exc:
        log.warning("message_unconfirmed", message_id=str(message_id), reason=exc.message)
        return await reconcile_message(state, user, message_id)
    except AppError as exc:
        code = exc.twilio_code if isinstance(exc, TwilioError) else None
        async with pool.acquire() as conn, conn.transaction():
            await store.fail_message(conn, message_id, code)
            if code == OPTED_OUT_CODE:
                await store.set_opt_out(conn, user, to_number, True)
        raise
    # Twilio's count is what is billed: ours was only an estimate.
    segments = twilio_count(created.num_segments)
    async with pool.acquire() as conn:
        await store.set_message_sid(conn, message_id, created.sid)
        await store.set_twilio_counts(conn, message_id, segments)
    return Outcome(message_id, "queued", created.sid, segments, encoding)


async def reconcile_message(state: Mapping, user: str, message_id: uuid.UUID) -> Outcome:
    """The message as it stands once no request is sending it: one still waiting for Twilio's
    SID is unconfirmed (announced once). What a replayed Idempotency-Key answers."""
    async with state[pool_key].acquire() as conn, conn.transaction():
        if await store.mark_unconfirmed(conn, message_id):
            await events.publish(conn, user, "message.status",
                                 {"messageId": str(message_id), "status": "unconfirmed"})
        row = await store.get_own_message(conn, user, message_id)
    if row is None:
        raise NotFound("No such message")
    return Outcome.of(row)

