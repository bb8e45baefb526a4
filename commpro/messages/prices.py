"""What the price job needs from messages; its fetch also brings Twilio's segment count and
error message, stored as they come."""

from __future__ import annotations

from commpro.messages import store
from commpro.messages.sms import twilio_count
from commpro.prices import PriceSource


async def _fetch(gateway, sid: str):
    return await gateway.client.messages(sid).fetch_async()


async def _observe(conn, message_id, fetched) -> None:
    message = fetched[0]
    await store.set_twilio_counts(conn, message_id, twilio_count(message.num_segments), message.error_code,
                                  message.error_message)


PRICES = PriceSource("messages", store.claim_due_prices, _fetch, store.set_price, store.reschedule_price,
                     _observe)
