"""The database goes away and comes back (issue 11): 503 with Retry-After meanwhile, one log
line per change of state, and the LISTEN connection restored once it is back.

A PostgreSQL server of this test's own is stopped and started: the session's server is shared.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from commpro.appkeys import db_health_key, hub_key
from commpro.events import store as events
from commpro.events.routes import RESYNC_CLOSE
from tests.conftest import WAIT_S, create_database, new_user
from tests.pgcontrol import StoppablePostgres
from tests.test_errors import assert_shape

PEER = "+447911123456"


@pytest.fixture
def postgres(tmp_path):
    pg = StoppablePostgres(tmp_path / "pg")
    try:
        yield pg
    finally:
        pg.close()


async def until(predicate) -> None:
    """Wait (bounded) until `predicate()` holds."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), WAIT_S)


async def test_database_outage_is_503_and_logged_once_per_change(start_service, postgres, logs):
    service = await start_service(DATABASE_URL=await create_database(postgres.url))
    user = new_user()
    number = await service.add_number(user)
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    health = service.app[db_health_key]

    await postgres.stop()
    for _ in range(10):
        resp = await service.client.get("/api/calls", headers=service.auth(user))
        assert resp.status == 503 and resp.headers["Retry-After"] == "2"
        error = assert_shape(await resp.json())
        assert error["code"] == "database_unavailable" and error["details"] == {"retryAfterSec": 2}
        form = {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": "hi", "NumMedia": "0"}
        assert (await service.webhook("/webhook/sms", form)).status == 503
    await until(lambda: health.down)
    assert (await service.client.get("/readyz")).status == 503
    # A stream cannot take its lease (sql/0016) without the database: 503 too.
    with pytest.raises(WSServerHandshakeError) as refused:
        await service.client.ws_connect("/api/events", headers=service.auth(user))
    assert refused.value.status == 503

    await postgres.start()
    await asyncio.wait_for(health.probe, WAIT_S)
    assert not health.down
    resp = await service.client.get("/api/calls", headers=service.auth(user))
    assert resp.status == 200

    lines = [r["event"] for r in logs.records()]
    assert lines.count("database_unavailable") == 1 and lines.count("database_available") == 1
    assert "unhandled_error" not in lines
    assert not [r for r in logs.records() if "exception" in r], "no traceback during the outage"
    # The open stream was told it may have missed events (4009): LISTEN is back.
    msg = await ws.receive(timeout=WAIT_S)
    assert msg.type == WSMsgType.CLOSE and msg.data == RESYNC_CLOSE
    await until(lambda: "event_listener_restored" in [r["event"] for r in logs.records()])
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    async with service.pool.acquire() as conn, conn.transaction():
        event_id = await events.publish(conn, user, "test.after_outage", {"n": 1})
    assert (await ws.receive_json(timeout=WAIT_S))["id"] == event_id
    await ws.close()
    assert service.app[hub_key] is not None
