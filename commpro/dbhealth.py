"""Whether the database can be reached, and what a request gets when it cannot.

An outage shows up in many shapes (connection refused, a connection closed under a query, the
server shutting down or still starting, a connect that times out). Each is answered 503 with
Retry-After by the error middleware, and reported here; one probe then tells down from up, so
the log gets one line when the database goes away and one when it is back, not a traceback per
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import db_health_key, pool_key

log = structlog.get_logger("commpro.db")
RETRY_AFTER_S = 2
PROBE_INTERVAL_S = 0.25
PROBE_TIMEOUT_S = 2.0
_OUTAGE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
           asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database is out of reach (rather than that a query is wrong)."""
    if isinstance(exc, _OUTAGE):
        return True
    # asyncpg's own "connection is closed" / "pool is closing" carry no class of their own, nor
    # does the state error of a connection the server dropped in the middle of a query. A pooled
    # connection the server closed is handed back to its pool at once, so the next call on it
    # says "released back to the pool".
    return (isinstance(exc, asyncpg.InterfaceError) and ("clos" in str(exc) or "released back" in str(exc))
            or isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc))


class DatabaseHealth:
    """Down or up, as the last probe found it. `suspect()` starts a probe unless one runs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down_since: float | None = None
        self.probe: asyncio.Task | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def suspect(self, exc: BaseException) -> None:
        if self.probe is None or self.probe.done():
            # A context of its own: the probe outlives the request that started it, and its
            # lines must not carry that request's id.
            self.probe = asyncio.create_task(self._watch(type(exc).__name__), name="db-probe",
                                             context=contextvars.Context())

    async def _reachable(self) -> bool:
        try:
            await self.pool.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure of a bare SELECT 1 means not reachable
            if not is_outage(exc):
                log.warning("database_probe_failed", error=type(exc).__name__)
            return False
        return True

    async def _watch(self, error: str) -> None:
        if await self._reachable():
            # A single failure, not an outage: one line, so that it is not silent either.
            log.warning("database_request_failed", error=error)
            return
        self.down_since = time.monotonic()
        log.error("database_unavailable", error=error)
        while not await self._reachable():
            await asyncio.sleep(PROBE_INTERVAL_S)
        down_s = time.monotonic() - self.down_since
        self.down_since = None
        log.info("database_available", down_s=round(down_s, 2))

    async def close(self) -> None:
        if self.probe is not None:
            self.probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.probe


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the pool's context: the tracker probes through the pool."""
    health = DatabaseHealth(app[pool_key])
    app[db_health_key] = health
    try:
        yield
    finally:
        await health.close()
