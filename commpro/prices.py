"""Price reconciliation: Twilio gives no price in callbacks, so each ended call and each message
has its price fetched through the REST API in the background, retried with a growing backoff
until it is set or `prices.window_s` has passed. A call costs the sum of its legs.

Rows are claimed with a lease (their next attempt moved forward, FOR UPDATE SKIP LOCKED), not a
lock held across Twilio calls, so several replicas never fetch the same price at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key, twilio_key
from commpro.background import periodic
from commpro.errors import AppError
from commpro.twilio_gateway import TwilioGateway

log = structlog.get_logger("commpro.prices")
BATCH = 20
LEASE_S = 120.0


@dataclass(frozen=True)
class PriceSource:
    """What a domain tells the price job: how to claim its rows (each with id, legs, ended_at,
    price_attempts), fetch one leg from Twilio, and store the outcome."""

    name: str
    claim: Callable[[asyncpg.Connection, datetime, int, float], Awaitable[list[asyncpg.Record]]]
    fetch: Callable[[TwilioGateway, str], Awaitable[Any]]
    set_price: Callable[[asyncpg.Connection, Any, Decimal, str], Awaitable[None]]
    reschedule: Callable[[asyncpg.Connection, Any, datetime, bool], Awaitable[None]]
    # Optional: store what else the fetched legs say (a message's segment count, its error).
    observe: Callable[[asyncpg.Connection, Any, list[Any]], Awaitable[None]] | None = None


async def fetch_due_prices(app: web.Application, source: PriceSource, now: datetime | None = None) -> int:
    """One round: claim what is due, fetch each leg; return how many got a price.
    `now` lets tests move time forward instead of waiting."""
    settings, pool, gateway = app[config_key].prices, app[pool_key], app[twilio_key]
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        due = await source.claim(conn, now, BATCH, LEASE_S)
    priced = 0
    for row in due:
        total, unit, fetched = await _price_of(gateway, source, row["legs"])
        async with pool.acquire() as conn:
            if source.observe is not None and fetched:
                await source.observe(conn, row["id"], fetched)
            if total is not None:
                await source.set_price(conn, row["id"], total, unit)
                priced += 1
                continue
            delay = min(settings.first_after_s * 2 ** (row["price_attempts"] + 1), settings.retry_max_s)
            next_at = now + timedelta(seconds=delay)
            give_up = next_at > row["ended_at"] + timedelta(seconds=settings.window_s)
            await source.reschedule(conn, row["id"], next_at, give_up)
        if give_up:
            log.warning("price_gave_up", kind=source.name, id=str(row["id"]), attempts=row["price_attempts"] + 1)
    return priced


async def _price_of(gateway: TwilioGateway, source: PriceSource,
                    legs: list[str]) -> tuple[Decimal | None, str, list[Any]]:
    """(total, unit, the legs fetched); total is None unless every leg has its price."""
    total, unit, fetched = Decimal(0), "USD", []
    for sid in legs:
        try:
            leg = await gateway.call(f"{source.name}.fetch", lambda sid=sid: source.fetch(gateway, sid))
        except AppError as exc:
            log.info("price_fetch_failed", kind=source.name, sid=sid, error=exc.code)
            return None, unit, fetched
        fetched.append(leg)
        try:
            total += Decimal(leg.price)
        except (TypeError, InvalidOperation):  # None until Twilio has priced it
            return None, unit, fetched
        unit = leg.price_unit or unit
    return total, unit, fetched


def price_job(source: PriceSource, interval_s: float):
    async def job(app: web.Application) -> None:
        await fetch_due_prices(app, source)

    return periodic(f"{source.name}-prices", interval_s, job)
