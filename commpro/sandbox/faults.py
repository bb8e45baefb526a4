"""Twilio as it misbehaves: the next creates (Calls.json, Messages.json) can answer after the
client's deadline ("late"), drop the connection once the request was read and acted on
("drop"), or read the request and never act on it or answer ("hang"). Set with
POST /_sandbox/control {"createFaults": [...], "faultDelayS": n}; every create request is
recorded, so a test counts how often Twilio was asked."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from commpro.sandbox.state import sandbox_state_key

CREATE_ROUTES = frozenset({"sandbox_create_call", "sandbox_create_message"})
FAULTS = ("late", "drop", "hang")
HANG_MAX_S = 60.0


@web.middleware
async def fault_middleware(request: web.Request, handler) -> web.StreamResponse:
    if request.match_info.route.name not in CREATE_ROUTES:
        return await handler(request)
    state = request.app[sandbox_state_key]
    form = await request.post()  # cached: the handler reads the same form
    state.create_requests.append(dict(form))
    fault = state.create_faults.pop(0) if state.create_faults else None
    if fault == "hang":
        # Until the sandbox stops (or a minute): the client has long given up by then.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), HANG_MAX_S)
        raise web.HTTPServiceUnavailable()
    if fault is not None:
        # What Twilio does with the request lags behind as its answer does: the call or message
        # starts its lifecycle (and its callbacks) only after the delay.
        state.lifecycle_delay_s = state.fault_delay_s
    try:
        response = await handler(request)
    finally:
        state.lifecycle_delay_s = 0.0
    if fault == "late":
        await asyncio.sleep(state.fault_delay_s)
    elif fault == "drop" and request.transport is not None:
        request.transport.close()
    return response
