"""The pieces `make harden` (tests/harden.py) drives: service processes, signed webhook load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
from twilio.request_validator import RequestValidator

from commpro.auth import mint_token
from commpro.config import load_config
from commpro.numbers.store import insert_number
from commpro.settings import Config

REPO = Path(__file__).resolve().parent.parent
PEER = "+447911123456"
CONCURRENCY = 8
MAX_REQUESTS = 50_000  # per scenario, whatever the durations say


def base_env(database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
            "COMMPRO_APP_DATA_DIR": str(data_dir), "COMMPRO_SANDBOX_RING_AFTER_S": "0",
            "COMMPRO_SANDBOX_ANSWER_AFTER_S": "0", "COMMPRO_SANDBOX_MESSAGE_STEP_S": "0",
            # Short windows, so that what a killed process left is settled within the scenario:
            # a key's lease lapses after 3 s, an unconfirmed create is swept after 2 s.
            "COMMPRO_TWILIO_TIMEOUT_S": "1", "COMMPRO_IDEMPOTENCY_LEASE_S": "3",
            "COMMPRO_IDEMPOTENCY_SWEEP_INTERVAL_S": "0.5", "COMMPRO_MESSAGES_UNCONFIRMED_AFTER_S": "2",
            "COMMPRO_CALLS_UNCONFIRMED_AFTER_S": "2",
            # The scenarios read the processes' logs as JSON lines.
            "LOG_FORMAT": "json"}


class ServiceProcess:
    """`python -m commpro serve` on a port of its own, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.config: Config = load_config(env=env)
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.server.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMPRO_", "TWILIO_", "JWT_"))}
        env.update(self.env, PYTHONPATH=str(REPO))
        with self.log.open("ab") as out:
            # Popen returns at once: nothing here waits on the child.
            self.proc = subprocess.Popen([sys.executable, "-m", "commpro", "serve"], env=env, stdout=out,  # noqa: ASYNC220
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}): see {self.log}")
            try:
                async with session.get(self.url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the service did not start: see {self.log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def token(self, user: str) -> str:
        return mint_token(self.config, user)

    def signed(self, path: str, form: dict[str, str]) -> dict[str, str]:
        url = self.config.server.public_base_url + path
        return {"X-Twilio-Signature": RequestValidator(self.config.twilio.auth_token).compute_signature(url, form)}


async def add_number(database_url: str, user: str, number: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await insert_number(conn, user, number, forward_to=PEER)
    finally:
        await conn.close()


def new_number() -> str:
    """A valid French mobile number (06 1x xx xx xx), fresh for this run."""
    return f"+3361{uuid.uuid4().int % 10**7:07d}"


def sms_form(number: str) -> dict[str, str]:
    return {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": "load", "NumMedia": "0"}


async def post_sms(session: aiohttp.ClientSession, svc: ServiceProcess, form: dict[str, str]) -> int:
    try:
        async with session.post(svc.url + "/webhook/sms", data=form, headers=svc.signed("/webhook/sms", form)) as r:
            await r.read()
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        return 0  # no answer at all (connection refused or reset)


async def stored_sids(database_url: str, sids: list[str]) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT sid FROM messages WHERE sid = any($1::text[])", sids)
    finally:
        await conn.close()
    return {r["sid"] for r in rows}


class Load:
    """`CONCURRENCY` senders of signed inbound SMS until stopped; answers counted per phase."""

    def __init__(self, session: aiohttp.ClientSession, svc: ServiceProcess, number: str) -> None:
        self.session, self.svc, self.number = session, svc, number
        self.phase = "before"
        self.by_phase: dict[str, Counter] = {}
        self.acked: list[str] = []
        self.ok_at: list[float] = []
        self._stop = asyncio.Event()
        self._sent = 0

    async def _sender(self) -> None:
        while not self._stop.is_set() and self._sent < MAX_REQUESTS:
            self._sent += 1
            form = sms_form(self.number)
            phase = self.phase
            status = await post_sms(self.session, self.svc, form)
            self.by_phase.setdefault(phase, Counter())[status] += 1
            if 200 <= status < 300:
                self.acked.append(form["MessageSid"])
                self.ok_at.append(time.monotonic())
            elif status == 0:
                await asyncio.sleep(0.05)

    async def run_until(self, stop: Callable[[], Awaitable[None]]) -> None:
        senders = [asyncio.create_task(self._sender()) for _ in range(CONCURRENCY)]
        try:
            await stop()
        finally:
            self._stop.set()
            await asyncio.gather(*senders)
