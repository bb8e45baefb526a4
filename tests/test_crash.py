"""A real `commpro serve` process killed with SIGKILL in the middle of creates, then restarted:
no Idempotency-Key stays stuck, no row reaches Twilio twice, and the sweep leaves no orphan.

Twilio is a stand-in in the test process (so that it outlives the killed server): it records
every create and holds each one unanswered until the server is dead.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import uuid
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import unused_port

from commpro.auth import mint_token
from commpro.config import load_config
from commpro.numbers.store import insert_number
from tests.conftest import PYTHON, REPO, WAIT_S, fresh_number, new_user, python_env

DEST = "+447911123456"
ACCOUNT = "AC" + "c" * 32


class TwilioStandIn:
    """Calls.json and Messages.json: every request recorded by the row id in its callback URL;
    while `holding`, none is answered."""

    def __init__(self) -> None:
        self.creates: Counter[str] = Counter()
        self.holding = True
        self.released = asyncio.Event()
        self.received = asyncio.Condition()

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        query = parse_qs(urlsplit(form["StatusCallback"]).query)
        row = (query.get("callId") or query.get("messageId"))[0]
        async with self.received:
            self.creates[row] += 1
            self.received.notify_all()
        if self.holding:
            await self.released.wait()
            raise web.HTTPServiceUnavailable()  # nobody is listening any more
        prefix = "CA" if request.path.endswith("Calls.json") else "SM"
        return web.json_response({"sid": prefix + uuid.uuid4().hex, "account_sid": ACCOUNT, "status": "queued",
                                  "to": form["To"], "from": form["From"], "num_segments": "1"}, status=201)

    async def until_received(self, count: int) -> None:
        async with self.received:
            await asyncio.wait_for(self.received.wait_for(lambda: sum(self.creates.values()) >= count), WAIT_S)


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "commpro", "serve", cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, "the process exited before it was listening"
        if line.startswith(b"Try:"):
            break
    # Keep reading what it logs, so that its pipe never fills.
    asyncio.get_running_loop().create_task(proc.stderr.read())
    return proc


async def test_sigkill_mid_create_then_restart(empty_database_url, tmp_path, aiohttp_server):
    standin = TwilioStandIn()
    app = web.Application()
    app.router.add_post(f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json", standin.create)
    app.router.add_post(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", standin.create)
    twilio = await aiohttp_server(app)
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    env = python_env(
        DATABASE_URL=empty_database_url, HOST="127.0.0.1", PORT=str(port), PUBLIC_BASE_URL=base,
        COMMPRO_APP_DATA_DIR=str(tmp_path / "data"), TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN="t" * 32,
        TWILIO_API_BASE_URL=str(twilio.make_url("")).rstrip("/"), JWT_SECRET="s" * 40,
        COMMPRO_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        COMMPRO_TWILIO_TIMEOUT_S="5", COMMPRO_IDEMPOTENCY_LEASE_S="6", COMMPRO_IDEMPOTENCY_SWEEP_INTERVAL_S="0.5",
        COMMPRO_CALLS_UNCONFIRMED_AFTER_S="8", COMMPRO_MESSAGES_UNCONFIRMED_AFTER_S="8",
        COMMPRO_CALLS_RATE_PER_MINUTE="1000", COMMPRO_MESSAGES_RATE_PER_MINUTE="1000")
    config = load_config(env={k: v for k, v in env.items() if k in ("JWT_SECRET", "COMMPRO_MASTER_KEY")})
    user, number = new_user(), fresh_number()
    auth = {"Authorization": f"Bearer {mint_token(config, user)}"}
    requests = [("/api/calls/initiate", {"from": number, "to": DEST}, f"call-{i}") for i in range(6)]
    requests += [("/api/messages/send", {"from": number, "to": DEST, "body": f"m{i}"}, f"sms-{i}") for i in range(6)]

    proc = await start(env)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await insert_number(conn, user, number, forward_to="+33612345678")
        async with aiohttp.ClientSession() as session:

            async def post(path, body, key):
                async with session.post(base + path, json=body, headers={**auth, "Idempotency-Key": key}) as resp:
                    return resp.status, await resp.json()

            in_flight = [asyncio.create_task(post(*r)) for r in requests]
            # Killed while Twilio holds at least half of the creates unanswered.
            await standin.until_received(len(requests) // 2)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            results = await asyncio.gather(*in_flight, return_exceptions=True)
            assert all(isinstance(r, aiohttp.ClientError) for r in results), results
            standin.holding = False
            standin.released.set()

            proc = await start(env)
            answers = {}
            for path, body, key in requests:
                # A key whose request died is in flight until its lease lapses, then answers.
                for _ in range(200):
                    status, payload = await post(path, body, key)
                    if status != 409:
                        break
                    await asyncio.sleep(0.1)
                assert status in (201, 202), (key, status, payload)
                answers[key] = payload
            # Nothing reached Twilio twice for one row.
            assert standin.creates and max(standin.creates.values()) == 1
            ids = {p.get("callId") or p.get("messageId") for p in answers.values()}
            assert len(ids) == len(requests)
            assert await conn.fetchval("SELECT count(*) FROM calls WHERE user_id = $1", user) == 6
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", user) == 6
            stuck = await conn.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1 AND "
                                        "locked_until > now()", user)
            assert stuck == 0
            # The rows whose creates died with the process wait, unconfirmed, for the sweep.
            orphans = ("SELECT (SELECT count(*) FROM calls WHERE user_id = $1 AND sid IS NULL AND status_rank < 3)"
                       " + (SELECT count(*) FROM messages WHERE user_id = $1 AND sid IS NULL AND status_rank < 3)")
            for _ in range(300):
                if await conn.fetchval(orphans, user) == 0:
                    break
                await asyncio.sleep(0.1)
            assert await conn.fetchval(orphans, user) == 0
            failed = await conn.fetchval(
                "SELECT (SELECT count(*) FROM calls WHERE user_id = $1 AND error_message = $2)"
                " + (SELECT count(*) FROM messages WHERE user_id = $1 AND error_message = $2)",
                user, "never confirmed by Twilio")
            # At least every row Twilio held when the process died: none was sent again.
            assert failed >= len(requests) // 2
    finally:
        await conn.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
