"""One error body for every failure, with the right status; a bare 500 that leaks nothing."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from commpro.appkeys import pool_key
from commpro.errors import Conflict, TooManyRequests, ValidationError
from tests.conftest import WAIT_S


def error_routes(app: web.Application) -> None:
    async def boom(request):
        raise RuntimeError("database password is hunter2")

    async def invalid(request):
        raise ValidationError(details={"to": "must be E.164"})

    async def limited(request):
        raise TooManyRequests(17)

    async def conflict(request):
        raise Conflict("already there")

    app.router.add_get("/api/test/boom", boom)
    app.router.add_get("/api/test/invalid", invalid)
    app.router.add_get("/api/test/limited", limited)
    app.router.add_get("/api/test/conflict", conflict)


def assert_shape(body: dict) -> dict:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body["error"]


async def test_unexpected_exception_is_a_bare_500_logged_with_traceback(start_service, logs):
    service = await start_service(app_hook=error_routes)
    resp = await service.client.get("/api/test/boom", headers={**service.auth(), "X-Request-ID": "req-123"})
    assert resp.status == 500
    assert resp.headers["X-Request-ID"] == "req-123"
    error = assert_shape(await resp.json())
    assert error == {"code": "internal", "message": "Internal server error", "details": {"requestId": "req-123"}}
    assert "hunter2" not in await resp.text()
    [line] = [r for r in logs.records() if r["event"] == "unhandled_error"]
    assert line["request_id"] == "req-123"
    assert "Traceback" in line["exception"] and "RuntimeError" in line["exception"]


async def test_domain_errors_keep_their_status_and_details(start_service):
    service = await start_service(app_hook=error_routes)
    resp = await service.client.get("/api/test/invalid", headers=service.auth())
    assert resp.status == 400
    assert assert_shape(await resp.json())["details"] == {"to": "must be E.164"}
    resp = await service.client.get("/api/test/limited", headers=service.auth())
    assert resp.status == 429 and resp.headers["Retry-After"] == "17"
    assert assert_shape(await resp.json())["code"] == "rate_limited"
    resp = await service.client.get("/api/test/conflict", headers=service.auth())
    assert resp.status == 409 and assert_shape(await resp.json())["message"] == "already there"


async def test_routing_errors_use_the_same_body(service):
    resp = await service.client.get("/api/nothing-here", headers=service.auth())
    assert resp.status == 404 and assert_shape(await resp.json())["code"] == "not_found"
    resp = await service.client.get("/webhook/sms")
    assert resp.status in (403, 405)
    assert_shape(await resp.json())
    resp = await service.client.delete("/healthz")
    assert resp.status == 405 and assert_shape(await resp.json())["code"] == "method_not_allowed"


async def test_request_id_is_generated_or_echoed(service):
    resp = await service.client.get("/healthz")
    assert len(resp.headers["X-Request-ID"]) == 32
    resp = await service.client.get("/healthz", headers={"X-Request-ID": "abc.DEF-1"})
    assert resp.headers["X-Request-ID"] == "abc.DEF-1"
    # Not an id we would echo into logs: replaced.
    resp = await service.client.get("/healthz", headers={"X-Request-ID": "x" * 300})
    assert resp.headers["X-Request-ID"] != "x" * 300


def deadlock_route(table: str):
    """A route whose two transactions lock two rows in opposite orders: PostgreSQL rolls one back
    with a real deadlock error, which the handler lets through."""

    def hook(app: web.Application) -> None:
        async def deadlock(request):
            pool = request.app[pool_key]

            async def lock(first: int, second: int, mine: asyncio.Event, theirs: asyncio.Event) -> None:
                # PostgreSQL's own deadlock_timeout (1 s): setting it takes a superuser.
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE", first)
                    mine.set()
                    await asyncio.wait_for(theirs.wait(), WAIT_S)
                    await conn.execute(f"SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE", second)

            a, b = asyncio.Event(), asyncio.Event()
            results = await asyncio.gather(lock(1, 2, a, b), lock(2, 1, b, a), return_exceptions=True)
            [failure] = [r for r in results if isinstance(r, BaseException)]
            raise failure

        app.router.add_post("/api/test/deadlock", deadlock)

    return hook


async def test_a_deadlock_is_a_retryable_503_not_a_500(start_service, logs):
    table = "deadlock_probe_" + uuid.uuid4().hex[:12]
    service = await start_service(app_hook=deadlock_route(table))
    await service.pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1), (2)")
    try:
        resp = await service.client.post("/api/test/deadlock", headers={**service.auth(), "X-Request-ID": "req-dl"})
    finally:
        await service.pool.execute(f"DROP TABLE {table}")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    error = assert_shape(await resp.json())
    assert error["code"] == "transaction_conflict" and error["details"] == {"retryAfterSec": 1}
    [line] = [r for r in logs.records() if r.get("request_id") == "req-dl" and r["level"] != "info"]
    assert line["event"] == "transaction_conflict" and line["level"] == "warning"
    assert line["path"] == "/api/test/deadlock" and "exception" not in line
