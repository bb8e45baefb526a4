"""Real processes: three replicas on one database (the Railway deploy is in test_deploy)."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import unused_port
from twilio.request_validator import RequestValidator

from commpro.auth import mint_token
from commpro.config import load_config
from commpro.numbers.store import insert_number
from tests.conftest import REPO, WAIT_S, fresh_number, new_user, python_env, serve

PEER = "+447911123456"


def signed(url: str, params: dict[str, str], token: str) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


async def test_three_replicas_share_events_and_limits(empty_database_url, tmp_path):
    ports = [unused_port() for _ in range(3)]
    env = python_env(DATABASE_URL=empty_database_url, HOST="127.0.0.1", COMMPRO_APP_DATA_DIR=str(tmp_path / "data"),
                     COMMPRO_MESSAGES_RATE_PER_MINUTE="2", COMMPRO_SANDBOX_MESSAGE_STEP_S="0")
    # All three start at once on an empty database: the migrations run under one lock.
    async with serve({**env, "PORT": str(ports[0])}), \
            serve({**env, "PORT": str(ports[1])}), \
            serve({**env, "PORT": str(ports[2])}):
        config = load_config(env={"COMMPRO_APP_DATA_DIR": str(tmp_path / "data")})
        user, number = new_user(), fresh_number()
        conn = await asyncpg.connect(empty_database_url)
        try:
            await insert_number(conn, user, number)
        finally:
            await conn.close()
        auth = {"Authorization": f"Bearer {mint_token(config, user)}"}
        a, b, c = (f"http://127.0.0.1:{p}" for p in ports)
        async with aiohttp.ClientSession() as session:
            # A webhook handled by A reaches a client connected to B.
            async with session.ws_connect(f"{b}/api/events", headers=auth) as ws:
                params = {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": "hello B"}
                async with session.post(f"{a}/webhook/sms", data=params,
                                        headers=signed(f"{a}/webhook/sms", params, config.twilio.auth_token)) as resp:
                    assert resp.status == 200
                msg = await asyncio.wait_for(ws.receive(), WAIT_S)
                assert orjson.loads(msg.data)["type"] == "message.received"
            # Two sends a minute, whichever replica is asked.
            statuses = []
            for base in (a, b, c):
                async with session.post(f"{base}/api/messages/send", json={"from": number, "to": PEER, "body": "x"},
                                        headers=auth) as resp:
                    statuses.append(resp.status)
            assert statuses == [201, 201, 429]
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(list((REPO / "sql").glob("*.sql")))
    finally:
        await conn.close()
