"""`python -m tests.bench.middleware`: what access logging, metrics, auth and the error middleware cost per request.

The same handler is served by a bare aiohttp app and by the full CommPro app (logs written to
/dev/null, so that JSON formatting and redaction count but the terminal does not); each gets the
same number of requests from one keep-alive client. Figures, then the ratio. No assertion: this
informs, it does not gate.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import unused_port

from commpro.app import create_app
from commpro.auth import mint_token
from commpro.config import load_config
from commpro.logs import configure_logging

DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the log stream, open as long as the process
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "3000"))
CONCURRENCY = 8


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def hammer(url: str, headers: dict[str, str]) -> float:
    """Requests per second, CONCURRENCY at a time."""
    per_worker = REQUESTS // CONCURRENCY
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            for _ in range(per_worker):
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()

        await worker()  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return per_worker * CONCURRENCY / (time.perf_counter() - started)


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main() -> None:
    database_url = os.environ.get("DATABASE_URL")
    data = Path(tempfile.mkdtemp(prefix="commpro-bench-"))
    if not database_url:
        from commpro.embedded import embedded_database_url

        database_url = embedded_database_url(data / "pg")
    configure_logging("INFO", DEVNULL)
    results = {}
    bare = web.Application()
    bare.router.add_get("/healthz", healthz)
    port = unused_port()
    runner = await serve(bare, port)
    results["bare aiohttp /healthz"] = await hammer(f"http://127.0.0.1:{port}/healthz", {})
    await runner.cleanup()

    port = unused_port()
    config = load_config(env={"DATABASE_URL": database_url, "PORT": str(port), "HOST": "127.0.0.1",
                              "COMMPRO_APP_DATA_DIR": str(data / "data")})
    runner = await serve(create_app(config), port)
    results["CommPro /healthz (log, metrics, errors)"] = await hammer(f"http://127.0.0.1:{port}/healthz", {})
    token = {"Authorization": f"Bearer {mint_token(config, 'bench')}"}
    results["CommPro /api/numbers (+ JWT, one query)"] = await hammer(f"http://127.0.0.1:{port}/api/numbers", token)
    await runner.cleanup()

    base = results["bare aiohttp /healthz"]
    print(f"{REQUESTS} requests, {CONCURRENCY} at a time, one client on loopback")
    for name, rate in results.items():
        print(f"  {name:42s} {rate:9.0f} req/s   {rate / base:5.2f}x bare   {1e6 / rate:7.0f} us/request")
    overhead = 1e6 / results["CommPro /healthz (log, metrics, errors)"] - 1e6 / base
    print(f"middleware cost per request: {overhead:.0f} us")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
