"""Twilio's voice webhooks: inbound routing, the outbound bridge, the Dial action, recordings and
status callbacks. The guard has checked each signature before these run."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import structlog
from aiohttp import web

from commpro import jobs
from commpro.appkeys import call_status_batcher_key, config_key, pool_key
from commpro.batcher import Apply
from commpro.calls import devices, inbound_store, leg_store, store, twiml
from commpro.calls.answering import call_connected, call_id_param, first_leg_taken, leg_accepted, leg_device
from commpro.calls.prices import PRICES
from commpro.errors import ValidationError
from commpro.events import store as events
from commpro.numbers import hours
from commpro.numbers import store as numbers
from commpro.quality.poller import VOICE_INSIGHTS, enrol_call
from commpro.validation import is_e164
from commpro.webhooks import form_int, webhook_form
from commpro.webhooks import twiml as twiml_response

log = structlog.get_logger("commpro.calls")
routes = web.RouteTableDef()
ANSWERED = frozenset({"completed", "answered"})


@routes.post("/webhook/voice", name="webhook_voice")
async def incoming_call(request: web.Request) -> web.Response:
    """A call to one of our numbers: reject, voicemail or ring the user, by the number's routing."""
    form = webhook_form(request, "CallSid", "From", "To")
    config = request.config_dict[config_key]
    async with request.config_dict[pool_key].acquire() as conn:
        number, call_id = await inbound_store.insert_inbound_call(conn, form["To"], form["CallSid"], form["From"])
    if number is None:
        log.info("call_to_unknown_number", call_sid=form["CallSid"], to_number=form["To"])
        return twiml_response(twiml.unknown_number(config))
    identity = devices.ring_identity(number, number["registered_identity"])
    if number["routing"] == "reject" or form["From"] in number["blocked_numbers"]:
        return twiml_response(twiml.reject())
    schedule = number["business_hours"]
    if not hours.status(schedule, datetime.now(UTC))[0]:
        return await _after_hours(request, number, call_id, schedule)
    if number["routing"] == "voicemail" or not (identity or number["forward_to"]):
        async with request.config_dict[pool_key].acquire() as conn:
            await inbound_store.connect_inbound_call(conn, call_id)
        return twiml_response(twiml.voicemail(config, number, call_id))
    return twiml_response(twiml.forward(config, number, call_id, identity))


async def _after_hours(request: web.Request, number, call_id, schedule: dict) -> web.Response:
    """Outside business hours: the routing the schedule names (voicemail by default, with its
    after-hours greeting), instead of ringing the user."""
    config = request.config_dict[config_key]
    if schedule["afterHours"] == "reject":
        return twiml_response(twiml.reject())
    if schedule["afterHours"] == "forward":
        # Another phone (an answering service): rung like the user's, the app is not.
        elsewhere = {**dict(number), "forward_to": schedule["afterHoursForwardTo"]}
        return twiml_response(twiml.forward(config, elsewhere, call_id, None))
    async with request.config_dict[pool_key].acquire() as conn:
        await inbound_store.connect_inbound_call(conn, call_id)
    greeting = schedule["afterHoursGreeting"] or config.voice.after_hours_greeting
    return twiml_response(twiml.voicemail(config, number, call_id, greeting, kind="after-hours"))


@routes.post("/webhook/voice/outbound", name="webhook_voice_outbound")
async def outbound_bridge(request: web.Request) -> web.Response:
    """The user answered the first leg of POST /api/calls/initiate (callId in the URL), or the app
    placed a call through the TwiML app (From=client:<identity>, To=the destination)."""
    form = webhook_form(request, "CallSid", "From")
    config = request.config_dict[config_key]
    call_id = call_id_param(request)
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        if call_id is not None:
            call = await store.find_webhook_call(conn, call_id, None)
            if call is None or call["direction"] != "outbound":
                log.warning("bridge_for_unknown_call", call_id=str(call_id), call_sid=form["CallSid"])
                return twiml_response(twiml.hangup())
            await _adopt(conn, call, form["CallSid"])
            if request.query.get("screen") == "1":  # the user's phone: a person must press the key first
                return twiml_response(twiml.screen_first_leg(config, call_id, call["to_number"]))
            await first_leg_taken(conn, call, form["CallSid"], leg_device(form.get("To", "")))
            number = await numbers.get_number_by_id(conn, call["phone_number_id"])
            return twiml_response(twiml.bridge(config, call_id, call["from_number"], call["to_number"], number=number))
        return twiml_response(await _app_call(conn, config, form))


async def _app_call(conn, config, form) -> object:
    identity = form["From"].removeprefix("client:")
    to = form.get("To", "")
    if not form["From"].startswith("client:") or not is_e164(to):
        return twiml.refuse(config, "Ce numéro n'est pas valide.")
    owned = await numbers.numbers_of_identity(conn, identity)
    wanted = form.get("CallerId")
    chosen = next((n for n in owned if n["e164"] == wanted), None) if wanted else (owned[0] if owned else None)
    if chosen is None:
        # The caller id must be one of this identity's user's numbers: nobody borrows another's.
        log.warning("app_call_refused", identity=identity, caller_id=wanted)
        return twiml.refuse(config, "Vous ne pouvez pas appeler depuis ce numéro.")
    call_id = await store.insert_app_call(conn, chosen["user_id"], chosen["id"], form["CallSid"], chosen["e164"], to)
    await leg_store.take_call(conn, call_id, "app", form["CallSid"])  # the user is on the app placing it
    return twiml.bridge(config, call_id, chosen["e164"], to, answer_on_bridge=True, number=chosen)


async def _adopt(conn, call, sid: str) -> bool:
    """A webhook with our callId proves Twilio placed the call: it takes the SID, and one that
    stood unconfirmed (or failed by the sweep) is initiated again. True when it was revived."""
    if call["sid"] is not None or call["direction"] != "outbound":
        return False
    revived = await store.adopt_call_sid(conn, call["id"], sid)
    if revived:
        log.info("call_confirmed_by_webhook", call_id=str(call["id"]), call_sid=sid)
        await events.publish(conn, call["user_id"], "call.status", {"callId": str(call["id"]), "status": "initiated"})
    return revived


@routes.post("/webhook/voice/completed", name="webhook_voice_completed")
async def dial_completed(request: web.Request) -> web.Response:
    """The Dial of an inbound call ended: hang up if someone took the call, else maybe voicemail.

    With a screened phone leg, DialCallStatus=completed only says that a leg answered: a carrier
    voicemail answers too, then hangs up at the whisper. Only acceptance, remembered on the call
    (a screened key press, an app answering), counts then."""
    form = webhook_form(request, "CallSid", "DialCallStatus", "To")
    config = request.config_dict[config_key]
    screened = request.query.get("screened") == "1"
    if form["DialCallStatus"] in ANSWERED and not screened:
        return twiml_response(twiml.hangup())
    async with request.config_dict[pool_key].acquire() as conn:
        number = await numbers.get_number_by_e164(conn, form["To"])
        call = await store.find_webhook_call(conn, call_id_param(request), form["CallSid"])
    if call is not None and call["answered_by"] is not None:
        return twiml_response(twiml.hangup())
    if number is None or call is None or not number["voicemail_on_no_answer"]:
        return twiml_response(twiml.hangup())
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        await call_connected(conn, call["user_id"], call["id"])
    return twiml_response(twiml.voicemail(config, number, call["id"]))


@routes.post("/webhook/voice/status", name="webhook_voice_status")
async def status_callback(request: web.Request) -> web.Response:
    """A leg's status. `leg=dial` is the leg to the destination (outbound: it is the call's
    status) or to the user (inbound: it tells when the user answered); `leg=user` is an outbound
    call's first leg, which only ends the call when the user never answered.

    Applied with the callbacks arriving at the same moment, in one statement and transaction
    (commpro.batcher, sql/0012), and answered once committed; the rare cases that statement
    leaves ('slow': an SID to adopt, a leg that takes the call) run here, one at a time."""
    form = webhook_form(request, "CallSid", "CallStatus")
    status = form["CallStatus"]
    if status not in store.STATUS_RANK:
        raise ValidationError(details={"CallStatus": "unknown status"})
    sequence, duration, error = form_int(form, "SequenceNumber"), form_int(form, "CallDuration"), form_int(form, "ErrorCode")
    call_id = call_id_param(request)
    target = form.get("To", "")
    item = {
        "callId": str(call_id) if call_id else None, "sid": form["CallSid"], "status": status,
        "rank": store.STATUS_RANK[status], "seq": sequence or 0, "duration": duration, "error": error,
        "leg": request.query.get("leg"), "parent": form.get("ParentCallSid") or None, "target": target,
        "device": request.query.get("device") or leg_device(target),
        "accepts": status == "in-progress" and request.query.get("screened") != "1",
    }
    outcome = await request.config_dict[call_status_batcher_key].submit_or(item, failed="slow")
    if outcome == "unknown":
        log.info("status_for_unknown_call", call_sid=form["CallSid"], status=status)
    elif outcome == "slow":
        log.debug("status_callback_alone", call_sid=form["CallSid"], status=status)
        await _status_alone(request, form, call_id, sequence, duration, error)
    return web.Response(status=204)


def status_batch(app: web.Application) -> Apply:
    """What the status callbacks' batcher runs: store.apply_status_callbacks with this config."""
    config = app[config_key]
    return partial(store.apply_status_callbacks, price_kind=PRICES.kind, price_after_s=config.prices.first_after_s,
                   quality_kind=VOICE_INSIGHTS, quality_after_s=config.quality.first_fetch_after_s,
                   channel=events.CHANNEL)


async def _status_alone(request: web.Request, form, call_id, sequence: int | None, duration: int | None,
                        error: int | None) -> None:
    """One status callback in a transaction of its own: every case, the rare ones included."""
    status = form["CallStatus"]
    leg = request.query.get("leg")
    config = request.config_dict[config_key]
    price_after = config.prices.first_after_s
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        call = await store.find_webhook_call(conn, call_id, form["CallSid"], lock=True)
        if call is None:
            log.info("status_for_unknown_call", call_sid=form["CallSid"], status=status)
            return

        moved: str | None = None

        async def advance(answers: bool, status: str = status) -> None:
            """Move the call forward, where this leg decides (published last, below)."""
            nonlocal moved
            if await store.apply_status(conn, call["id"], status, sequence or 0, duration, error, answers=answers):
                moved = status

        if leg == "dial":
            if form.get("ParentCallSid"):
                # The user's leg placed this one: whatever became of the create, it exists.
                await _adopt(conn, call, form["ParentCallSid"])
            await store.set_dial_sid(conn, call["id"], form["CallSid"])
            target = form.get("To", "")
            if call["direction"] == "outbound":
                await leg_store.record_leg(conn, call["id"], form["CallSid"], "destination", target, status,
                                           sequence or 0, duration)
                await advance(answers=True)
            else:
                device = request.query.get("device") or leg_device(target)
                await leg_store.record_leg(conn, call["id"], form["CallSid"], device, target, status,
                                           sequence or 0, duration)
                # An app, or an unscreened phone, takes the call by answering; a screened phone
                # by pressing the key (/webhook/voice/screen/result).
                if status == "in-progress" and request.query.get("screened") != "1":
                    await leg_accepted(conn, call, form["CallSid"], device, target)
        elif leg == "user":
            if await _adopt(conn, call, form["CallSid"]):
                call = await store.find_webhook_call(conn, call["id"], None)
            # Once the destination is dialled, its leg decides; before, a first leg that ends
            # (the user did not answer, or hung up) ends the call.
            if store.STATUS_RANK[status] == store.TERMINAL_RANK and call["dial_sid"] is None:
                # Completed but never accepted: a machine answered the screened phone.
                unaccepted = status == "completed" and call["answered_by"] is None
                await advance(answers=False, status="no-answer" if unaccepted else status)
        else:
            # The caller's own leg (inbound calls): the user answering shows on the dial leg.
            await advance(answers=call["direction"] == "outbound")
        if status == "completed":
            # Its Voice Insights summary will be fetched (a no-op unless the call did complete).
            await enrol_call(conn, call["id"], config.quality.first_fetch_after_s)
        if moved and store.STATUS_RANK[moved] == store.TERMINAL_RANK:
            await jobs.enqueue(conn, PRICES.kind, str(call["id"]), after_s=price_after)
        if moved:
            # Last: the owner's event counter stays locked until the commit.
            await events.publish(conn, call["user_id"], "call.status", {"callId": str(call["id"]), "status": moved})
