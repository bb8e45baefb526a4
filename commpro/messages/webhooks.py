"""Twilio's messaging webhooks: inbound SMS/MMS and delivery status. The guard has checked each
signature before these run."""

from __future__ import annotations

import functools
import uuid
from functools import partial

import asyncpg
import structlog
from aiohttp import web
from twilio.twiml.messaging_response import MessagingResponse

from commpro import jobs
from commpro.appkeys import (
    config_key,
    inbound_sms_batcher_key,
    jobs_key,
    keyring_key,
    message_status_batcher_key,
    number_owners_key,
    pool_key,
)
from commpro.batcher import Apply, ItemFailed
from commpro.errors import ValidationError
from commpro.events import store as events
from commpro.ids import uuid7
from commpro.keys import DataKey
from commpro.logs import request_line
from commpro.messages import erasure_store, inbound_store, status_store, store
from commpro.messages.content import seal
from commpro.messages.media import MEDIA_FETCH
from commpro.messages.prices import PRICES
from commpro.messages.sms import encoding_of, opt_keyword, twilio_count
from commpro.numbers.owners import Owner
from commpro.webhooks import form_int, twiml, webhook_form

LOGGER = "commpro.messages"
log = structlog.get_logger(LOGGER)
routes = web.RouteTableDef()
MAX_MEDIA = 10
# The reply to every inbound message (the twilio builder's, rendered once: the profile showed
# rendering it per request at 5 % of the webhook's CPU).
NO_REPLY = str(MessagingResponse())


@routes.post("/webhook/sms", name="webhook_sms")
async def inbound_sms(request: web.Request) -> web.Response:
    """Store the message encrypted, once per MessageSid, and answer at once; its media is
    recorded as pending in the same transaction and fetched in the background. Usually no round
    trip of its own: the number's owner is the one remembered (numbers/owners.py) and its data key
    cached; the statement (inbound_store), applied with the messages arriving at the same moment
    in one transaction (commpro.batcher) and answered once that is committed, checks that owner.
    Should the number have changed hands since, it stores nothing, and the message is sealed
    again for the owner looked up now."""
    form = webhook_form(request, "MessageSid", "From", "To")
    num_media = max(0, min(form_int(form, "NumMedia") or 0, MAX_MEDIA))
    config = request.config_dict[config_key]
    body = form.get("Body", "")
    keyword = opt_keyword(body, form.get("OptOutType"))
    encoding = encoding_of(body)
    owners = request.config_dict[number_owners_key]
    message_id = uuid7()
    media = _pending_media(form, num_media)
    jobs = _jobs(config.prices.first_after_s)

    async def store_as(owner: Owner) -> asyncpg.Record | None:
        user = owner.user_id
        # Twilio's NumSegments is the billed count; the price job's fetch fills it in if absent.
        return await _store_inbound(request, inbound_store.InboundSms(
            message_id, user, owner.id, form["MessageSid"], form["From"], form["To"],
            seal(await _sealing_key(request, user), "body", user, message_id, body.encode()),
            twilio_count(form.get("NumSegments")), encoding, num_media, {"stop": True, "start": False}.get(keyword),
            media, jobs, erase=config.messages.erase_at_twilio))

    row = None
    owner = owners.get(form["To"])
    if owner is not None:
        row = await store_as(owner)
        if row is None:  # the number changed hands (or was released) since it was remembered
            owners.forget(form["To"])
    if row is None:
        async with request.config_dict[pool_key].acquire() as conn:
            owner = await owners.look_up(conn, form["To"])
        if owner is not None:
            row = await store_as(owner)
    if row is None:  # no such number (or it was released since the lookup)
        log.info("sms_to_unknown_number", message_sid=form["MessageSid"], to_number=form["To"])
        return twiml(NO_REPLY)
    request_line(request, LOGGER, "sms_received", message_sid=form["MessageSid"], from_number=form["From"],
                 to_number=form["To"], num_media=num_media, duplicate=not row["inserted"], keyword=keyword,
                 blocked=row["blocked"])
    if row["inserted"] and num_media:
        request.config_dict[jobs_key].wake(MEDIA_FETCH)
    return twiml(NO_REPLY)


@functools.lru_cache(maxsize=8)
def _jobs(price_after_s: float) -> inbound_store.Jobs:
    """The same for every message of a process (its config): made once."""
    return inbound_store.Jobs(PRICES.kind, price_after_s, MEDIA_FETCH)


async def _sealing_key(request: web.Request, user_id: str) -> DataKey:
    """The owner's data key: cached, or read (created when it has none) outside a transaction, so
    that a key created here is committed at once, and cached."""
    keyring = request.config_dict[keyring_key]
    key = keyring.cached_key(user_id)
    if key is None:
        async with request.config_dict[pool_key].acquire() as conn:
            key = await keyring.data_key(conn, user_id, create=True)
    return key


def inbound_batch(app: web.Application) -> Apply:
    """What the inbound messages' batcher runs: inbound_store.insert_inbound_batch."""
    return inbound_store.insert_inbound_batch


async def _store_inbound(request: web.Request, sms: inbound_store.InboundSms):
    try:
        return await request.config_dict[inbound_sms_batcher_key].submit(sms)
    except ItemFailed:
        # It failed even alone: once more here, so that its error is answered as any other's
        # (a 503 while the database is away).
        async with request.config_dict[pool_key].acquire() as conn:
            return await inbound_store.insert_inbound_sms(conn, sms)


def _pending_media(form, num_media: int) -> list[inbound_store.PendingMedia]:
    media = []
    for i in range(num_media):
        url = form.get(f"MediaUrl{i}")
        if not url:
            continue
        media_sid = url.rstrip("/").rsplit("/", 1)[-1]
        media.append(inbound_store.PendingMedia(uuid.uuid4(), media_sid if media_sid.startswith("ME") else None,
                                                form.get(f"MediaContentType{i}"), url, position=i))
    return media


@routes.post("/webhook/status", name="webhook_message_status")
async def message_status(request: web.Request) -> web.Response:
    """MessageStatus only moves forward (store.STATUS_RANK); late or repeated callbacks change
    nothing. ErrorMessage is kept beside ErrorCode.

    Applied with the callbacks arriving at the same moment, in one statement and transaction
    (commpro.batcher, sql/0012), and answered once committed; what that statement leaves ('slow':
    an SID to adopt, an erasure to queue) runs here, one at a time."""
    form = webhook_form(request, "MessageSid", "MessageStatus")
    status = form["MessageStatus"]
    if status not in store.STATUS_RANK:
        raise ValidationError(details={"MessageStatus": "unknown status"})
    error_code = form_int(form, "ErrorCode")
    message_id = None
    if "messageId" in request.query:
        try:
            message_id = uuid.UUID(request.query["messageId"])
        except ValueError:
            raise ValidationError(details={"messageId": "must be a UUID"}) from None
    rank = store.STATUS_RANK[status]
    erase = request.config_dict[config_key].messages.erase_at_twilio and _is_final(status)
    item = {"messageId": str(message_id) if message_id else None, "sid": form["MessageSid"], "status": status,
            "rank": rank, "error": error_code, "errorMessage": form.get("ErrorMessage") or None, "erase": erase}
    outcome = await request.config_dict[message_status_batcher_key].submit_or(item, failed="slow")
    if outcome == "unknown":
        log.info("status_for_unknown_message", message_sid=form["MessageSid"], status=status)
    elif outcome == "slow":
        log.debug("status_callback_alone", message_sid=form["MessageSid"], status=status)
        await _status_alone(request, form, message_id, error_code)
    return web.Response(status=204)


def _is_final(status: str) -> bool:
    """Twilio has a price for it now (and its content may be erased there)."""
    return store.STATUS_RANK[status] >= store.FINAL_RANK and status != "canceled"


def status_batch(app: web.Application) -> Apply:
    """What the message status batcher runs: status_store.apply_status_callbacks with this config."""
    return partial(status_store.apply_status_callbacks, price_kind=PRICES.kind,
                   price_after_s=app[config_key].prices.first_after_s, channel=events.CHANNEL)


async def _status_alone(request: web.Request, form, message_id: uuid.UUID | None, error_code: int | None) -> None:
    """One status callback in a transaction of its own: every case, the rare ones included."""
    status = form["MessageStatus"]
    config = request.config_dict[config_key]
    price_after = config.prices.first_after_s
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        message = await store.find_webhook_message(conn, message_id, form["MessageSid"])
        if message is None:
            log.info("status_for_unknown_message", message_sid=form["MessageSid"], status=status)
            return
        if message["sid"] is None and message["direction"] == "outbound" and await store.adopt_message_sid(
                conn, message["id"], form["MessageSid"]):
            # Our messageId proves Twilio took a message whose create went unanswered.
            log.info("message_confirmed_by_webhook", message_id=str(message["id"]), message_sid=form["MessageSid"])
            await events.publish(conn, message["user_id"], "message.status",
                                 {"messageId": str(message["id"]), "status": "queued"})
        if await store.apply_status(conn, message["id"], status, error_code, form.get("ErrorMessage") or None):
            final = _is_final(status)
            if final:  # Twilio has a price for it now
                await jobs.enqueue(conn, PRICES.kind, str(message["id"]), after_s=price_after)
            if config.messages.erase_at_twilio and message["direction"] == "outbound" and final:
                await erasure_store.enqueue_final(conn, message["id"])
            # Last: the owner's event counter stays locked until the commit.
            await events.publish(conn, message["user_id"], "message.status",
                                 {"messageId": str(message["id"]), "status": status})
