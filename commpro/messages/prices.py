"""What the price job needs from messages."""

from __future__ import annotations

from commpro.jobs import Kind
from commpro.messages import store
from commpro.prices import PriceSource, price_kind
from commpro.settings import Config


async def _fetch(gateway, sid: str):
    return await gateway.client.messages(sid).fetch_async()


PRICES = PriceSource("messages", store.price_legs, _fetch, store.set_price, store.price_gave_up)


def message_prices(config: Config) -> Kind:
    return price_kind(PRICES, config)
