"""Twilio's messaging webhooks.

For now the inbound SMS webhook is verified (by the guard), checked for its required fields,
logged without its body and answered with empty TwiML. Storing the message, encrypted, is the
messaging work that follows.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from twilio.twiml.messaging_response import MessagingResponse

from commpro.webhooks import twiml, webhook_form

log = structlog.get_logger("commpro.messages")
routes = web.RouteTableDef()


@routes.post("/webhook/sms", name="webhook_sms")
async def inbound_sms(request: web.Request) -> web.Response:
    form = webhook_form(request, "MessageSid", "From", "To")
    log.info(
        "sms_received",
        message_sid=form["MessageSid"],
        from_number=form["From"],
        to_number=form["To"],
        num_media=form.get("NumMedia", "0"),
    )
    return twiml(MessagingResponse())
