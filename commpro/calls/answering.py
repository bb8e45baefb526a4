"""Who took a call: the use cases the voice webhooks share when a leg is accepted."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp import web

from commpro.calls import leg_store, store
from commpro.errors import ValidationError
from commpro.events import store as events


def call_id_param(request: web.Request) -> uuid.UUID | None:
    """The callId we put in every webhook URL we give Twilio (None when absent)."""
    value = request.query.get("callId")
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(details={"callId": "must be a UUID"}) from None


def leg_device(target: str) -> str:
    """What a leg to `target` rings: the app (client:identity) or a phone."""
    return "app" if target.startswith("client:") else "phone"


async def _taken(conn: asyncpg.Connection, call: asyncpg.Record, device: str) -> None:
    await events.publish(conn, call["user_id"], "call.answered", {"callId": str(call["id"]), "answeredBy": device})


async def call_connected(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID) -> None:
    """An inbound call was connected (to the user, or to voicemail): it is in progress."""
    if await leg_store.mark_in_progress(conn, call_id):
        await events.publish(conn, user_id, "call.status", {"callId": str(call_id), "status": "in-progress"})


async def leg_accepted(conn: asyncpg.Connection, call: asyncpg.Record, sid: str, device: str, target: str) -> bool:
    """A child leg of an inbound call was accepted; True when it took the call (then the call is
    answered and its owner told). False: another leg had taken it, or the caller had hung up."""
    if not await leg_store.accept_leg(conn, call["id"], sid, device, target):
        return False
    await store.set_answered(conn, call["id"])
    await _taken(conn, call, device)
    await call_connected(conn, call["user_id"], call["id"])
    return True


async def first_leg_taken(conn: asyncpg.Connection, call: asyncpg.Record, sid: str, device: str) -> bool:
    """An outbound call's first leg (the user's device) was accepted: the destination may be dialled."""
    if not await leg_store.take_call(conn, call["id"], device, sid):
        return False
    await _taken(conn, call, device)
    return True
