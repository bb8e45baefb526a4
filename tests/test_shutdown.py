"""Graceful shutdown as `commpro serve` does it: stop accepting, finish what is in flight, then
close every resource (the SIGTERM path itself is in test_cli)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from commpro.app import create_app
from commpro.appkeys import pool_key
from commpro.auth import mint_token


async def test_in_flight_requests_finish_before_resources_close(make_config, logs):
    config = make_config()
    app = create_app(config)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        # The pool is still open while a request is in flight.
        return web.json_response({"one": await request.config_dict[pool_key].fetchval("SELECT 1")})

    app.router.add_get("/api/test/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.server.port).start()
    url = f"http://127.0.0.1:{config.server.port}"
    headers = {"Authorization": f"Bearer {mint_token(config, 'u')}"}
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(session.get(url + "/api/test/slow", headers=headers))
        await asyncio.wait_for(entered.wait(), 10)
        shutdown = asyncio.create_task(runner.cleanup())
        release.set()
        resp = await asyncio.wait_for(in_flight, 10)
        assert resp.status == 200 and await resp.json() == {"one": 1}
        await asyncio.wait_for(shutdown, 10)
    events = [r["event"] for r in logs.records()]
    assert events.index("twilio_closed") < events.index("db_closed")
