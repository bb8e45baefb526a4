"""The sandbox's own controls: inbound traffic through the real, signed webhooks, and the
account's state. Used by `commpro sandbox sms|call` and by the tests."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

from aiohttp import web

from commpro.sandbox import store
from commpro.sandbox.faults import FAULTS
from commpro.sandbox.lifecycle import call_params, finish_inbound_call, post_signed
from commpro.sandbox.state import (
    API_VERSION,
    SandboxCall,
    SandboxMedia,
    SandboxMessage,
    new_sid,
    now,
    sandbox_state_key,
)

routes = web.RouteTableDef()


async def _json(request: web.Request, *required: str) -> dict:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(reason="expected a JSON object") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="expected a JSON object")
    missing = [name for name in required if not isinstance(data.get(name), str) or not data[name]]
    if missing:
        raise web.HTTPBadRequest(reason="missing: " + ", ".join(missing))
    return data


@routes.post("/simulate/sms", name="sandbox_simulate_sms")
async def simulate_sms(request: web.Request) -> web.Response:
    """An SMS or MMS from `from` to one of the service's numbers: POST /webhook/sms, signed."""
    state = request.app[sandbox_state_key]
    data = await _json(request, "from", "to")
    body = data.get("body") or ""
    media_in = data.get("media") or []
    sid = new_sid("MM" if media_in else "SM")
    message = SandboxMessage(sid, state.account_sid, data["from"], data["to"], body, "inbound", status="received",
                             price_at=now() + timedelta(seconds=state.config.pacing.price_after_s))
    for item in media_in:
        try:
            content = base64.b64decode(item["dataBase64"], validate=True)
            media = SandboxMedia(new_sid("ME"), sid, state.account_sid, str(item["contentType"]), content)
        except (KeyError, TypeError, binascii.Error):
            raise web.HTTPBadRequest(reason="media items are {contentType, dataBase64}") from None
        message.media.append(media)
    await state.add_message(message)
    api = state.config.api_base_url
    params = {
        "AccountSid": state.account_sid, "ApiVersion": API_VERSION, "MessageSid": sid, "SmsSid": sid,
        "SmsMessageSid": sid, "SmsStatus": "received", "From": message.from_, "To": message.to,
        "Body": body, "NumMedia": len(message.media), "NumSegments": message.json()["num_segments"],
    }
    for i, media in enumerate(message.media):
        params[f"MediaUrl{i}"] = f"{api}/{API_VERSION}/Accounts/{state.account_sid}/Messages/{sid}/Media/{media.sid}"
        params[f"MediaContentType{i}"] = media.content_type
    url = state.config.public_base_url + "/webhook/sms"
    result = await post_signed(state, url, params)
    return web.json_response({"messageSid": sid, "webhook": {"url": url, "status": result.status,
                                                             "response": result.text}})


@routes.post("/simulate/call", name="sandbox_simulate_call")
async def simulate_call(request: web.Request) -> web.Response:
    """A call from `from` to one of the service's numbers: POST /webhook/voice, signed; the
    rest of the call (its TwiML played, the status callback) follows in the background."""
    state = request.app[sandbox_state_key]
    data = await _json(request, "from", "to")
    call = SandboxCall(new_sid("CA"), state.account_sid, data["from"], data["to"], "inbound", status="ringing")
    await state.save_call(call)
    base = state.config.public_base_url
    voice_url, status_url = base + "/webhook/voice", base + "/webhook/voice/status"
    answer = await post_signed(state, voice_url, call_params(call))
    state.spawn(finish_inbound_call(state, call, answer, voice_url, status_url))
    return web.json_response({"callSid": call.sid, "webhook": {"url": voice_url, "status": answer.status,
                                                               "response": answer.text}})


@routes.post("/control", name="sandbox_control")
async def control(request: web.Request) -> web.Response:
    """{"account": "suspended"} makes every create fail as for an account out of funds;
    {"pricesNow": true} prices every ended call and message at once instead of after
    price_after_s; {"mediaFailures": n} makes the next n media downloads fail with a 500;
    {"summaryErrors": [404, 429]} makes the next summary requests fail so, in order;
    {"summariesComplete": true} makes every summary complete at once; {"mediaRedirect": "s3"}
    makes media URLs redirect to an S3-like host instead of the media host ("cdn");
    {"createFaults": ["late", "drop", "hang"], "faultDelayS": 2} makes the next creates answer
    late, drop the connection, or hang (sandbox/faults.py); {"forget": true} deletes every call,
    message, media and recording of the account from the database (lifecycles still playing
    write theirs again at their next step)."""
    state = request.app[sandbox_state_key]
    data = await _json(request)
    account = data.get("account")
    if account is not None:
        if account not in ("active", "suspended"):
            raise web.HTTPBadRequest(reason="account is 'active' or 'suspended'")
        state.account_status = account
    if data.get("forget") is True:
        await store.forget(state.db(), state.account_sid)
    if data.get("pricesNow") is True:
        # Ended calls and final messages have a price time: it is now (for every process).
        await store.price_now(state.db(), state.account_sid, now())
    summary_errors = data.get("summaryErrors")
    if summary_errors is not None:
        if not isinstance(summary_errors, list) or not all(e in (404, 429) for e in summary_errors):
            raise web.HTTPBadRequest(reason="summaryErrors is a list of 404 and 429")
        state.summary_errors = list(summary_errors)
    if data.get("summariesComplete") is not None:
        state.summaries_complete = data["summariesComplete"] is True
    faults = data.get("createFaults")
    if faults is not None:
        if not isinstance(faults, list) or not all(f in FAULTS for f in faults):
            raise web.HTTPBadRequest(reason="createFaults is a list of " + ", ".join(FAULTS))
        state.create_faults = list(faults)
    delay = data.get("faultDelayS")
    if delay is not None:
        if not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise web.HTTPBadRequest(reason="faultDelayS is a number of seconds from 0 to 60")
        state.fault_delay_s = float(delay)
    redirect = data.get("mediaRedirect")
    if redirect is not None:
        if redirect not in ("cdn", "s3"):
            raise web.HTTPBadRequest(reason="mediaRedirect is 'cdn' or 's3'")
        state.media_redirect = redirect
    failures = data.get("mediaFailures")
    if failures is not None:
        if not isinstance(failures, int) or failures < 0:
            raise web.HTTPBadRequest(reason="mediaFailures is a whole number")
        state.media_failures = failures
    return web.json_response({"account": state.account_status})
