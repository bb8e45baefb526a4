"""Background loops, each in a cleanup context of its own.

A loop logs and survives the failure of one iteration; cancellation (shutdown) ends it, and the
context awaits it before the pool and the Twilio client close underneath it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from commpro.appkeys import metrics_key, tasks_key
from commpro.dbhealth import is_outage

log = structlog.get_logger("commpro.background")

Job = Callable[[web.Application], Awaitable[None]]


def periodic(name: str, interval_s: float, job: Job,
             wake: web.AppKey[asyncio.Event] | None = None) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs `job(app)` every `interval_s` seconds until shutdown, or
    sooner when the event under `wake` is set."""

    async def loop(app: web.Application) -> None:
        while True:
            try:
                await job(app)
            except Exception as exc:
                if is_outage(exc):
                    # The outage itself is logged once by the health tracker: no traceback here.
                    log.warning("background_iteration_skipped", task=name, reason="database_unavailable")
                else:
                    log.exception("background_iteration_failed", task=name)
            else:
                if metrics_key in app:
                    app[metrics_key].job_succeeded(name)
            if wake is None:
                await asyncio.sleep(interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(app[wake].wait(), interval_s)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop(app), name=name)
        app[tasks_key][name] = task
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("background_stopped", task=name)

    return ctx
