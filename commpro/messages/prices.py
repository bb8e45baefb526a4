"""What the price job needs from messages; its fetch also brings Twilio's segment count and
error message, stored as they come."""

from __future__ import annotations

from commpro.jobs import Kind
from commpro.messages import store
from commpro.messages.sms import twilio_count
from commpro.prices import PriceSource, price_kind
from commpro.settings import Config


async def _fetch(gateway, sid: str):
    return await gateway.client.messages(sid).fetch_async()


async def _observe(conn, message_id, fetched) -> None:
    message = fetched[0]
    await store.set_twilio_counts(conn, message_id, twilio_count(message.num_segments), message.error_code,
                                  message.error_message)


PRICES = PriceSource("messages", store.price_legs, _fetch, store.set_price, store.price_gave_up, _observe)


def message_prices(config: Config) -> Kind:
    return price_kind(PRICES, config)
