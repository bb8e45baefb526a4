"""Real parts: a real PostgreSQL (embedded unless DATABASE_URL is set), the real aiohttp server,
the real twilio client talking HTTP to the sandbox mounted on that server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port
from twilio.request_validator import RequestValidator

from commpro.app import create_app
from commpro.appkeys import pool_key, twilio_key
from commpro.auth import mint_token
from commpro.config import Config, load_config
from commpro.devserver import mount_sandbox
from commpro.logs import configure_logging
from commpro.numbers.store import insert_number, update_number
from commpro.sandbox.state import SandboxState, sandbox_state_key
from commpro.twilio_gateway import TwilioGateway

REPO = Path(__file__).resolve().parent.parent


class LogCapture(io.StringIO):
    """Everything the service logs during the run; each test reads what it caused."""

    def records(self) -> list[dict]:
        return [orjson.loads(line) for line in self.getvalue().splitlines() if line.startswith("{")]

    def clear(self) -> None:
        self.seek(0)
        self.truncate()


LOGS = LogCapture()


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("DEBUG", LOGS)


@pytest.fixture
def logs() -> LogCapture:
    LOGS.clear()
    return LOGS


_numbers = itertools.count(int(uuid.uuid4().int % 10**6))


def fresh_number() -> str:
    """A valid French mobile number no other test has used in this run."""
    return f"+336{next(_numbers) % 10**8:08d}"


def new_user() -> str:
    return "user-" + uuid.uuid4().hex[:10]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> str:
    """A PostgreSQL server: DATABASE_URL's, or an embedded one started for this run."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from commpro.embedded import embedded_database_url

    return embedded_database_url(tmp_path_factory.mktemp("pg"), database="postgres")


async def create_database(server_url: str, prefix: str = "commpro_test_") -> str:
    """A new, empty database on the server; its URL."""
    name = prefix + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(pg_server_url) -> str:
    """One database for the run, migrated by the first app that starts on it."""
    return asyncio.run(create_database(pg_server_url))


@pytest.fixture
async def empty_database_url(pg_server_url) -> str:
    """A database of its own, with nothing in it."""
    return await create_database(pg_server_url)


@pytest.fixture
def make_config(tmp_path, database_url) -> Callable[..., Config]:
    """Config as the service loads it (config.toml + environment), pointed at this test's
    database, a free port and a private data dir; keyword arguments are more variables."""

    def make(port: int | None = None, **env: str) -> Config:
        base = {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port or unused_port()),
            "COMMPRO_APP_DATA_DIR": str(tmp_path / "data"),
            "COMMPRO_SANDBOX_RING_AFTER_S": "0",
            "COMMPRO_SANDBOX_ANSWER_AFTER_S": "0",
            "COMMPRO_SANDBOX_MESSAGE_STEP_S": "0",
            "COMMPRO_SANDBOX_CALL_DURATION_S": "7",
            "COMMPRO_SANDBOX_PACE": "0",
            "COMMPRO_SANDBOX_SUMMARY_PARTIAL_AFTER_S": "0",
            "COMMPRO_SANDBOX_SUMMARY_COMPLETE_AFTER_S": "0",
        }
        base.update(env)
        return load_config(env=base)

    return make


@dataclass
class Service:
    config: Config
    app: web.Application
    client: TestClient

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def twilio(self) -> TwilioGateway:
        return self.app[twilio_key]

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app[pool_key]

    def token(self, user: str = "alice") -> str:
        return mint_token(self.config, user)

    def auth(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def sign(self, path: str, params: dict[str, str], base: str | None = None) -> str:
        """X-Twilio-Signature for a POST of `params` to `path`, as Twilio would compute it."""
        url = (base or self.config.server.public_base_url) + path
        return RequestValidator(self.config.twilio.auth_token).compute_signature(url, params)

    async def webhook(self, path: str, params: dict[str, str]):
        """POST a form to one of our webhooks, signed as Twilio signs."""
        return await self.client.post(path, data=params, headers={"X-Twilio-Signature": self.sign(path, params)})

    @property
    def sandbox(self) -> SandboxState:
        return self.app[sandbox_state_key]

    async def sandbox_idle(self) -> None:
        """Wait until the sandbox has played every lifecycle it started (each posts its callbacks
        and waits for our answers, so our side is done too)."""
        while self.sandbox.tasks:
            pending = [task for task in self.sandbox.tasks if not task.done()]
            if pending:
                await asyncio.wait_for(asyncio.gather(*pending), WAIT_S)
            else:
                # Done, but their done-callbacks (which remove them) have not run yet. Python
                # 3.12's gather() of done tasks returns without yielding: without this the loop
                # would spin for ever.
                await asyncio.sleep(0)

    async def sandbox_control(self, **payload) -> None:
        auth = aiohttp.encode_basic_auth(self.config.twilio.account_sid, self.config.twilio.auth_token)
        resp = await self.client.post("/_sandbox/control", json=payload, headers={"Authorization": auth})
        assert resp.status == 200

    async def simulate_call(self, from_: str, to: str) -> dict:
        auth = aiohttp.encode_basic_auth(self.config.twilio.account_sid, self.config.twilio.auth_token)
        resp = await self.client.post("/_sandbox/simulate/call", json={"from": from_, "to": to},
                                      headers={"Authorization": auth})
        assert resp.status == 200
        return await resp.json()

    async def add_number(self, user: str, *, identity: str | None = None, forward_to: str | None = None,
                         **settings) -> str:
        """Give `user` a fresh number through our own store; `settings` are number columns."""
        number = fresh_number()
        async with self.pool.acquire() as conn:
            row = await insert_number(conn, user, number, identity=identity, forward_to=forward_to)
            if settings:
                await update_number(conn, user, row["id"], settings)
        return number


@pytest.fixture
def start_service(aiohttp_client, make_config) -> Callable[..., asyncio.Future[Service]]:
    """Start the real app on a real port, with the sandbox beside it as `make run` has it (unless
    Twilio credentials are given); `app_hook(app)` may add test-only routes first."""

    async def start(config: Config | None = None, app_hook=None, **env: str) -> Service:
        if config is None:
            config = make_config(**env)
        app = create_app(config)
        if config.twilio.sandbox:
            mount_sandbox(app, config)
        if app_hook is not None:
            app_hook(app)
        client = await aiohttp_client(app, server_kwargs={"port": config.server.port, "host": "127.0.0.1"})
        return Service(config, app, client)

    return start


@pytest.fixture
async def service(start_service) -> AsyncIterator[Service]:
    yield await start_service()


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a `python -m commpro` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMMPRO_", "TWILIO_", "JWT_"))}
    env["PYTHONPATH"] = str(REPO)
    # The tests read the service's log lines as JSON; development's default is for people.
    env["LOG_FORMAT"] = "json"
    env.update(extra)
    return env


PYTHON = sys.executable
WAIT_S = 10


async def until(predicate, timeout=WAIT_S):
    """Poll a coroutine predicate until it holds (the state it waits on lives in the database)."""
    async def loop():
        while not await predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(loop(), timeout)


@contextlib.asynccontextmanager
async def serve(env: dict[str, str], stdout=asyncio.subprocess.DEVNULL, command: list[str] | None = None,
                cwd: Path = REPO) -> AsyncIterator[list[str]]:
    """`python -m commpro serve` as `make run` starts it (or `command`, in `cwd`); yields its
    banner once it has printed it (the server listens by then); SIGTERM at the end, which must
    end it cleanly."""
    proc = await asyncio.create_subprocess_exec(*(command or [PYTHON, "-m", "commpro", "serve"]), cwd=cwd, env=env,
                                                stdout=stdout, stderr=asyncio.subprocess.PIPE)
    try:
        banner: list[str] = []
        while not banner or not banner[-1].startswith("Try:"):
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, "serve exited before printing its banner:\n" + "\n".join(banner)
            banner.append(line.decode().strip())
        yield banner
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0


@dataclass
class Receiver:
    """A stand-in for the service's webhooks: it records each request and checks its signature."""

    auth_token: str
    base: str = ""
    twiml: str = "<Response><Say>Hello</Say></Response>"
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        url = self.base + request.path_qs
        valid = RequestValidator(self.auth_token).validate(url, form, request.headers.get("X-Twilio-Signature", ""))
        await self.events.put((request.path, form, valid))
        if request.path == "/twiml":
            return web.Response(text=self.twiml, content_type="text/xml")
        return web.Response(text="<Response/>", content_type="text/xml")

    async def next(self, path: str | None = None) -> dict:
        while True:
            got_path, form, valid = await asyncio.wait_for(self.events.get(), WAIT_S)
            assert valid, f"unsigned or badly signed callback to {got_path}"
            if path is None or got_path == path:
                return form


@pytest.fixture
async def receiver(service, aiohttp_server) -> Receiver:
    rec = Receiver(service.config.twilio.auth_token)
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.base = str(server.make_url("")).rstrip("/")
    return rec


ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


async def create_call(service, receiver, to="+33612345678", events=ALL_EVENTS, **kwargs):
    client = service.twilio.client
    return await service.twilio.call("calls.create", lambda: client.calls.create_async(
        to=to, from_="+15005550006", url=receiver.base + "/twiml",
        status_callback=receiver.base + "/status", status_callback_event=events, **kwargs))
