"""A local stand-in for Twilio, mounted at /_sandbox beside the service in development (when no
Twilio credentials are set) and in the tests.

The real twilio client talks to it over HTTP (through `client.api.base_url` and
`client.insights.base_url`), and it calls the service back with signed webhooks. It imports
nothing of the service, and the service imports nothing of it: commpro/devserver.py mounts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from commpro.sandbox import api, simulate
from commpro.sandbox.config import SandboxConfig
from commpro.sandbox.faults import fault_middleware
from commpro.sandbox.state import SandboxState, sandbox_state_key


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[api.basic_auth_middleware, fault_middleware])
    app[sandbox_state_key] = SandboxState(config)
    app.add_routes(api.routes)
    app.add_routes(simulate.routes)
    app.cleanup_ctx.append(_session_ctx)
    return app


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[sandbox_state_key]
    state.session = aiohttp.ClientSession()
    try:
        yield
    finally:
        state.stopping.set()
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await state.session.close()
