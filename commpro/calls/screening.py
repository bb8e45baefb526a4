"""Call screening ("call whisper"): a phone leg hears who calls and must press 1 to be connected.

A carrier voicemail or a machine that answers the user's phone presses nothing, so its leg hangs
up and the call goes on as if nobody answered: CommPro's voicemail for an inbound call, no dialling
for POST /api/calls/initiate. App legs are never screened: the user answered on the device.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.calls import store, twiml
from commpro.calls.answering import call_id_param, first_leg_taken, leg_accepted
from commpro.numbers import store as numbers
from commpro.webhooks import twiml as twiml_response
from commpro.webhooks import webhook_form

log = structlog.get_logger("commpro.calls")
routes = web.RouteTableDef()
ACCEPT_KEY = "1"


def _open(call) -> bool:
    """Still worth connecting: the caller is on the line and no other leg took the call."""
    return call is not None and call["answered_by"] is None and call["status_rank"] < store.TERMINAL_RANK


@routes.post("/webhook/voice/screen", name="webhook_voice_screen")
async def screen(request: web.Request) -> web.Response:
    """<Number url>: the user's phone answered an inbound call; whisper, and wait for the key."""
    webhook_form(request, "CallSid")  # a request from Twilio names its leg
    async with request.config_dict[pool_key].acquire() as conn:
        call = await store.find_webhook_call(conn, call_id_param(request), None)
    if not _open(call):
        return twiml_response(twiml.hangup())
    return twiml_response(twiml.screen_leg(request.config_dict[config_key], call["id"], call["from_number"]))


@routes.post("/webhook/voice/screen/result", name="webhook_voice_screen_result")
async def screen_result(request: web.Request) -> web.Response:
    """The key pressed on the whisper: 1 connects this leg (if it is the first), else hang up."""
    form = webhook_form(request, "CallSid")
    if form.get("Digits") != ACCEPT_KEY:
        return twiml_response(twiml.hangup())
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        # The call locked before its leg, as the status batches and the status code run alone
        # take them: a batch touching this call and leg waits for us, or we for it; no deadlock.
        call = await store.find_webhook_call(conn, call_id_param(request), None, lock=True)
        won = call is not None and call["direction"] == "inbound" and await leg_accepted(
            conn, call, form["CallSid"], "phone", form.get("To", ""))
    if not won:
        log.info("screened_leg_not_connected", call_sid=form["CallSid"])
        return twiml_response(twiml.hangup())
    return twiml_response(twiml.connect())


@routes.post("/webhook/voice/outbound/accept", name="webhook_voice_outbound_accept")
async def outbound_accept(request: web.Request) -> web.Response:
    """The user's phone, screened before POST /api/calls/initiate dials the destination."""
    form = webhook_form(request, "CallSid")
    config = request.config_dict[config_key]
    if form.get("Digits") != ACCEPT_KEY:
        return twiml_response(twiml.hangup())
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        call = await store.find_webhook_call(conn, call_id_param(request), None, lock=True)  # call, then leg
        won = call is not None and call["direction"] == "outbound" and await first_leg_taken(
            conn, call, form["CallSid"], "phone")
        number = await numbers.get_number_by_id(conn, call["phone_number_id"]) if won else None
    if not won:
        return twiml_response(twiml.hangup())
    return twiml_response(twiml.bridge(config, call["id"], call["from_number"], call["to_number"], number=number))
