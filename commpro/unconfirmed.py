"""The sweep of creates Twilio never confirmed: an API-placed call or message whose create went
unanswered, and that no webhook has adopted within calls.unconfirmed_after_s or
messages.unconfirmed_after_s, ends as failed, "never confirmed by Twilio". A webhook that comes
later still revives it (calls/webhooks.py, messages/webhooks.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.calls import store as calls
from commpro.events import store as events
from commpro.jobs import Job, Kind
from commpro.messages import store as messages
from commpro.settings import Config

log = structlog.get_logger("commpro.unconfirmed")
BATCH = 200
Sweep = Callable[[asyncpg.Connection, datetime, int], Awaitable[list[asyncpg.Record]]]


async def sweep_unconfirmed(state: Mapping, kind: str, now: datetime | None = None) -> int:
    """Fail one batch of `kind` ("calls" or "messages") that nothing confirmed in its window;
    how many were failed."""
    config = state[config_key]
    sweep, window_s, event, id_name = {
        "calls": (calls.sweep_unconfirmed, config.calls.unconfirmed_after_s, "call.status", "callId"),
        "messages": (messages.sweep_unconfirmed, config.messages.unconfirmed_after_s, "message.status", "messageId"),
    }[kind]
    before = (now or datetime.now(UTC)) - timedelta(seconds=window_s)
    async with state[pool_key].acquire() as conn, conn.transaction():
        ended = await sweep(conn, before, BATCH)
        # Each user's event counter once, in the order every batch locks them: never a deadlock.
        await events.publish_many(conn, [(row["user_id"], event, {id_name: str(row["id"]), "status": "failed"})
                                         for row in ended])
    for row in ended:
        log.warning("never_confirmed_by_twilio", kind=kind, id=str(row["id"]))
    return len(ended)


async def sweep(app: web.Application, job: Job) -> None:
    for kind in ("calls", "messages"):
        while await sweep_unconfirmed(app, kind, job.now) == BATCH:
            pass


def unconfirmed_sweep(config: Config) -> Kind:
    """A recurring job, every idempotency.sweep_interval_s."""
    every_s = config.idempotency.sweep_interval_s
    return Kind("unconfirmed-sweep", sweep, poll_s=min(every_s, 60), every_s=every_s, lease_s=config.jobs.lease_s)
