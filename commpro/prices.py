"""Price reconciliation: Twilio gives no price in callbacks, so each ended call and each message
gets a price job (enqueued with the status that ends it) that fetches the price through the REST
API, retried with the jobs' backoff until it is set or `prices.window_s` has passed. A call
costs the sum of its legs.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import pool_key, twilio_key
from commpro.errors import AppError
from commpro.jobs import Backoff, Job, Kind, Retry
from commpro.settings import Config
from commpro.twilio_gateway import TwilioGateway

log = structlog.get_logger("commpro.prices")


@dataclass(frozen=True)
class PriceSource:
    """What a domain tells the price job: the Twilio SIDs of a row's legs (None once it needs no
    price), how to fetch one leg, and how to store the outcome."""

    name: str
    legs: Callable[[asyncpg.Connection, Any], Awaitable[list[str] | None]]
    fetch: Callable[[TwilioGateway, str], Awaitable[Any]]
    set_price: Callable[[asyncpg.Connection, Any, Decimal, str], Awaitable[None]]
    gave_up: Callable[[asyncpg.Connection, Any], Awaitable[None]]
    # Optional: store what else the fetched legs say (a message's segment count, its error),
    # whether or not they are priced yet.
    observe: Callable[[asyncpg.Connection, Any, list[Any]], Awaitable[None]] | None = None

    @property
    def kind(self) -> str:
        return f"{self.name}-prices"


def price_kind(source: PriceSource, config: Config) -> Kind:
    settings = config.prices

    async def run(app: web.Application, job: Job) -> None:
        pool, gateway = app[pool_key], app[twilio_key]
        row_id = uuid.UUID(job.key)
        async with pool.acquire() as conn:
            legs = await source.legs(conn, row_id)
        if legs is None:  # priced already, or gone
            return
        if not legs:
            raise Retry("no Twilio SID yet")
        fetched: list[Any] = []
        try:
            total, unit = await _price_of(gateway, source, legs, fetched)
        finally:
            if source.observe is not None and fetched:
                async with pool.acquire() as conn:
                    await source.observe(conn, row_id, fetched)
        async with pool.acquire() as conn:
            await source.set_price(conn, row_id, total, unit)

    async def gave_up(conn: asyncpg.Connection, job: Job, reason: str) -> None:
        await source.gave_up(conn, uuid.UUID(job.key))

    backoff = Backoff(first_s=settings.first_after_s, max_s=settings.retry_max_s, jitter=config.jobs.jitter,
                      give_up_after_s=settings.window_s)
    return Kind(source.kind, run, backoff, poll_s=settings.poll_interval_s, lease_s=config.jobs.lease_s,
                gave_up=gave_up)


async def _price_of(gateway: TwilioGateway, source: PriceSource, legs: list[str],
                    fetched: list[Any]) -> tuple[Decimal, str]:
    """The sum of the legs' prices; each leg fetched is appended to `fetched`."""
    total, unit = Decimal(0), "USD"
    for sid in legs:
        try:
            leg = await gateway.call(f"{source.name}.fetch", lambda sid=sid: source.fetch(gateway, sid))
        except AppError as exc:
            raise Retry(f"price fetch failed: {exc.code}") from None
        fetched.append(leg)
        try:
            total += Decimal(leg.price)
        except (TypeError, InvalidOperation):  # None until Twilio has priced it
            raise Retry("not priced by Twilio yet") from None
        unit = leg.price_unit or unit
    return total, unit
