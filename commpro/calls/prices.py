"""What the price job needs from calls: a call costs the sum of its legs."""

from __future__ import annotations

from commpro.calls import store
from commpro.prices import PriceSource


async def _fetch_leg(gateway, sid: str):
    return await gateway.client.calls(sid).fetch_async()


PRICES = PriceSource("calls", store.claim_due_prices, _fetch_leg, store.set_price, store.reschedule_price)
