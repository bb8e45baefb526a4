"""What the price job needs from calls: a call costs the sum of its legs."""

from __future__ import annotations

from commpro.calls import store
from commpro.jobs import Kind
from commpro.prices import PriceSource, price_kind
from commpro.settings import Config


async def _fetch_leg(gateway, sid: str):
    return await gateway.client.calls(sid).fetch_async()


PRICES = PriceSource("calls", store.price_legs, _fetch_leg, store.set_price, store.price_gave_up)


def call_prices(config: Config) -> Kind:
    return price_kind(PRICES, config)
