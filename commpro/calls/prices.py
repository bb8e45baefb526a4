"""The price job: Twilio gives no price in callbacks, so each ended call's price is fetched
through the REST API, retried with a growing backoff until it is set or a window has passed.
A bridged call costs the sum of its legs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key, twilio_key
from commpro.background import periodic
from commpro.calls import store
from commpro.errors import AppError

log = structlog.get_logger("commpro.prices")
BATCH = 20
# How long a claimed call stays out of other replicas' reach while its legs are fetched.
LEASE_S = 120.0


async def fetch_due_prices(app: web.Application, now: datetime | None = None) -> int:
    """One round: claim the calls whose price is due, fetch their legs; return how many got one.
    `now` lets tests move time forward instead of waiting."""
    config, pool, gateway = app[config_key], app[pool_key], app[twilio_key]
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        due = await store.claim_due_prices(conn, now, BATCH, LEASE_S)
    priced = 0
    for call in due:
        legs = [sid for sid in (call["sid"], call["dial_sid"]) if sid]
        total, unit = await _price_of(gateway, legs)
        async with pool.acquire() as conn:
            if total is not None:
                await store.set_price(conn, call["id"], total, unit)
                priced += 1
                continue
            delay = min(config.calls.price_first_after_s * 2 ** (call["price_attempts"] + 1),
                        config.calls.price_retry_max_s)
            next_at = now + timedelta(seconds=delay)
            give_up = next_at > call["ended_at"] + timedelta(seconds=config.calls.price_window_s)
            await store.reschedule_price(conn, call["id"], next_at, give_up)
            if give_up:
                log.warning("price_gave_up", call_id=str(call["id"]), attempts=call["price_attempts"] + 1)
    return priced


async def _price_of(gateway, legs: list[str]) -> tuple[Decimal | None, str]:
    total, unit = Decimal(0), "USD"
    for sid in legs:
        try:
            leg = await gateway.call("calls.fetch", lambda sid=sid: gateway.client.calls(sid).fetch_async())
        except AppError as exc:
            log.info("price_fetch_failed", call_sid=sid, error=exc.code)
            return None, unit
        if leg.price is None:
            return None, unit
        try:
            total += Decimal(leg.price)
        except InvalidOperation:
            log.warning("price_unreadable", call_sid=sid)
            return None, unit
        unit = leg.price_unit or unit
    return total, unit


def price_job(interval_s: float):
    return periodic("call-prices", interval_s, fetch_due_prices)
