"""Placing a call through POST /api/calls/initiate: the one place that decides what Twilio's
answer, or its absence, means for the call.

The row is inserted, and bound to the request's Idempotency-Key, before Twilio is asked, so a
retry never asks twice. Twilio's answer gives three outcomes: placed (the SID), refused (a 4xx
with its code, or a connection refused before anything was sent: the call fails), and unknown
(the deadline passed, the connection dropped after sending, a 5xx). Unknown is not a failure:
the call may exist, so it stays `unconfirmed` until a webhook carrying its callId adopts it (see
calls/webhooks.py) or the sweep ends it as never confirmed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from commpro.appkeys import config_key, pool_key, twilio_key
from commpro.calls import devices, store, twiml
from commpro.errors import AppError, Forbidden, NotFound, Unprocessable
from commpro.events import store as events
from commpro.guards import Bind, spend
from commpro.numbers import store as numbers
from commpro.twilio_gateway import TwilioUnanswered

log = structlog.get_logger("commpro.calls")


@dataclass(frozen=True)
class Outcome:
    """A placed call (201) or one whose create Twilio never answered (202, `unconfirmed`)."""

    call_id: uuid.UUID
    status: str
    sid: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> Outcome:
        return cls(row["id"], row["status"], row["sid"])

    def answer(self) -> tuple[int, dict[str, Any]]:
        code = 202 if self.status == "unconfirmed" else 201
        return code, {"callId": str(self.call_id), "status": self.status, "sid": self.sid}


async def place_call(state: Mapping, user: str, from_number: str, to_number: str, bind: Bind) -> Outcome:
    """Ring the user's phone (or else the app) from `from_number`; the destination is dialled
    when they answer. Raises the refusal as an AppError; returns placed or unconfirmed."""
    config, pool, gateway = state[config_key], state[pool_key], state[twilio_key]
    async with pool.acquire() as conn:
        number = await numbers.get_owned_number(conn, user, from_number)
        registered = await devices.registered_identity(conn, user)
    if number is None:
        raise Forbidden("'from' is not one of your numbers", details={"from": "not yours"})
    # The user's phone rings first, or else the app; the destination is dialled on answer.
    identity = devices.ring_identity(number, registered)
    first_leg = number["forward_to"] or (f"client:{identity}" if identity else None)
    if first_leg is None:
        raise Unprocessable("This number has neither a forward-to phone nor an app identity to ring first")
    await spend(pool, user, "calls.initiate", config.calls.rate_per_minute)
    async with pool.acquire() as conn, conn.transaction():
        call = await store.insert_outbound_call(conn, user, number["id"], from_number, to_number)
        await bind(conn, call["id"])
        await events.publish(conn, user, "call.created",
                             {"callId": str(call["id"]), "direction": "outbound", "status": "initiated"})
    try:
        created = await gateway.call("calls.create", lambda: gateway.client.calls.create_async(
            to=first_leg,
            from_=from_number,
            # screen=1: the user's phone must press the key before the destination is dialled.
            url=twiml.webhook_url(config, "/webhook/voice/outbound", callId=call["id"],
                                  screen=1 if number["forward_to"] and number["screening"] else None),
            method="POST",
            status_callback=twiml.webhook_url(config, "/webhook/voice/status", callId=call["id"], leg="user"),
            status_callback_event=twiml.ALL_EVENTS.split(),
            status_callback_method="POST",
            timeout=number["ring_timeout_s"],
        ))
    except TwilioUnanswered as exc:
        log.warning("call_unconfirmed", call_id=str(call["id"]), reason=exc.message)
        return await reconcile_call(state, user, call["id"])
    except AppError as exc:
        async with pool.acquire() as conn:
            await store.fail_call(conn, call["id"], getattr(exc, "twilio_code", None), exc.message)
        raise
    async with pool.acquire() as conn:
        await store.set_call_sid(conn, call["id"], created.sid)
    return Outcome(call["id"], "initiated", created.sid)


async def reconcile_call(state: Mapping, user: str, call_id: uuid.UUID) -> Outcome:
    """The call as it stands, once no request is placing it any more: one still waiting for
    Twilio's SID is unconfirmed (announced once). What a replayed Idempotency-Key answers."""
    async with state[pool_key].acquire() as conn, conn.transaction():
        if await store.mark_unconfirmed(conn, call_id):
            await events.publish(conn, user, "call.status", {"callId": str(call_id), "status": "unconfirmed"})
        row = await store.get_call(conn, user, call_id)
    if row is None:  # deleted since; the key outlived it
        raise NotFound("No such call")
    return Outcome.of(row)

