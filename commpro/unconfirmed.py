"""The sweep of creates Twilio never confirmed: an API-placed call or message whose create went
unanswered, and that no webhook has adopted within calls.unconfirmed_after_s or
messages.unconfirmed_after_s, ends as failed, "never confirmed by Twilio". A webhook that comes
later still revives it (calls/webhooks.py, messages/webhooks.py)."""

from __future__ import annotations

from aiohttp import web

from commpro.background import periodic
from commpro.calls.service import sweep_unconfirmed_calls
from commpro.messages.service import sweep_unconfirmed_messages


async def sweep(app: web.Application) -> None:
    while await sweep_unconfirmed_calls(app):
        pass
    while await sweep_unconfirmed_messages(app):
        pass


def sweep_job(interval_s: float):
    return periodic("unconfirmed-sweep", interval_s, sweep)
