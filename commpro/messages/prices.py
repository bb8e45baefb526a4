"""What the price job needs from messages."""

from __future__ import annotations

from commpro.messages import store
from commpro.prices import PriceSource


async def _fetch(gateway, sid: str):
    return await gateway.client.messages(sid).fetch_async()


PRICES = PriceSource("messages", store.claim_due_prices, _fetch, store.set_price, store.reschedule_price)
