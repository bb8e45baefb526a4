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
import asyncpg
from aiohttp import web

from commpro.sandbox import api, simulate, store
from commpro.sandbox.config import SandboxConfig
from commpro.sandbox.faults import fault_middleware
from commpro.sandbox.state import SandboxState, sandbox_state_key


def create_sandbox_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[api.basic_auth_middleware, fault_middleware])
    app[sandbox_state_key] = SandboxState(config)
    app.add_routes(api.routes)
    app.add_routes(simulate.routes)
    # Cleanup runs in reverse: the lifecycles (session_ctx) end before the pool they write through.
    app.cleanup_ctx.append(_pool_ctx)
    app.cleanup_ctx.append(_session_ctx)
    return app


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """Its own few connections to the service's database, the schema created or brought up to
    date first. Few: one write per change of a call or message, one read per REST request."""
    state = app[sandbox_state_key]
    state.pool = await asyncpg.create_pool(state.config.database_url, min_size=1, max_size=5)
    try:
        async with state.pool.acquire() as conn:
            await store.ensure_schema(conn)
        yield
    finally:
        await state.pool.close()


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
