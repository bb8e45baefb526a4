"""The `commpro` command as a user runs it: a real process, a real database."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import unused_port

from commpro.config import load_config
from tests.conftest import PYTHON, REPO, python_env, serve


async def run(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "commpro", *args, cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def cli_env(tmp_path, empty_database_url) -> dict[str, str]:
    return python_env(DATABASE_URL=empty_database_url, COMMPRO_APP_DATA_DIR=str(tmp_path / "data"))


@pytest.mark.parametrize("args", [[], ["serve"], ["migrate"], ["numbers"], ["numbers", "add"], ["numbers", "list"],
                                  ["token"], ["sandbox", "sms"], ["sandbox", "call"], ["sandbox", "control"],
                                  ["events"]])
async def test_help_on_each_command(args, cli_env):
    code, out, _ = await run(*args, "--help", env=cli_env)
    assert code == 0 and out.startswith("usage: commpro")


async def test_numbers_add_and_list(cli_env):
    code, out, err = await run("numbers", "add", "alice", "+33 6 12 34 56 78", "--forward-to", "+15005550006",
                               "--identity", "alice-app", env=cli_env)
    assert code == 0, err
    added = json.loads(out)
    assert (added["userId"], added["number"], added["forwardTo"], added["identity"]) == (
        "alice", "+33612345678", "+15005550006", "alice-app")
    code, _, _ = await run("numbers", "add", "bob", "+15005550010", env=cli_env)
    assert code == 0
    code, out, _ = await run("numbers", "list", env=cli_env)
    assert [json.loads(line)["number"] for line in out.splitlines()] == ["+33612345678", "+15005550010"]
    code, out, _ = await run("numbers", "list", "--user", "bob", env=cli_env)
    assert [json.loads(line)["userId"] for line in out.splitlines()] == ["bob"]


async def test_numbers_add_refuses_bad_input(cli_env):
    code, _, err = await run("numbers", "add", "alice", "0612", env=cli_env)
    assert code == 2 and "E.164" in err
    assert (await run("numbers", "add", "alice", "+15005550006", env=cli_env))[0] == 0
    code, _, err = await run("numbers", "add", "bob", "+15005550006", env=cli_env)
    assert code == 1 and "already assigned" in err
    code, _, err = await run("numbers", "add", "bob", "+15005550007", "--identity", "x", env=cli_env)
    assert code == 0
    code, _, err = await run("numbers", "add", "carol", "+15005550008", "--identity", "x", env=cli_env)
    assert code == 1 and "identity" in err


async def test_token_is_valid_for_the_configured_secret(cli_env, tmp_path):
    code, out, _ = await run("token", "alice", "--ttl", "120", env=cli_env)
    assert code == 0
    config = load_config(env={"COMMPRO_APP_DATA_DIR": str(tmp_path / "data")})
    claims = jwt.decode(out.strip(), config.auth.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 120


async def test_invalid_setting_stops_with_its_name(cli_env):
    code, _, err = await run("migrate", env={**cli_env, "PORT": "http"})
    assert code == 2 and "PORT" in err


async def test_unreachable_database_fails_fast_with_masked_password(cli_env):
    dsn = f"postgresql://app:hunter2@127.0.0.1:{unused_port()}/x"
    code, _, err = await run("migrate", env={**cli_env, "DATABASE_URL": dsn}, timeout=30)
    assert code == 1 and "database unreachable" in err
    assert "hunter2" not in err and "app:***@" in err


async def test_serve_banner_token_sandbox_sms_and_graceful_shutdown(cli_env):
    """What a new user does: serve, use the printed token, simulate an SMS, stop with SIGTERM."""
    port = unused_port()
    env = {**cli_env, "PORT": str(port), "HOST": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "commpro", "serve", cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = []
        while not banner or not banner[-1].startswith("Try:"):
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, "serve exited before printing its banner"
            banner.append(line.decode().strip())
        token = next(b.split()[1] for b in banner if b.startswith("Token:"))
        assert any("+15005550006" in b for b in banner)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200 and (await r.json())["twilio"]["mode"] == "sandbox"
        code, out, err = await run("sandbox", "sms", "--from", "+33612345678", "--to", "+15005550006",
                                   "--body", "hello", env=env)
        assert code == 0, err
        assert json.loads(out)["webhook"]["status"] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in out.decode().splitlines() if line.startswith("{")]
    assert "sms_received" in events
    # Shutdown order: the Twilio client, then the pool, then the process says it is done.
    tail = [e for e in events if e in ("twilio_closed", "db_closed", "shutdown_complete")]
    assert tail == ["twilio_closed", "db_closed", "shutdown_complete"]


async def test_sandbox_command_without_a_server_says_so(cli_env):
    code, _, err = await run("sandbox", "call", "--from", "+33612345678", "--to", "+15005550006",
                             env={**cli_env, "PORT": str(unused_port())})
    assert code == 1 and "is `make run` running?" in err
    code, _, err = await run("events", env={**cli_env, "PORT": str(unused_port())})
    assert code == 1 and "is `make run` running?" in err and "Traceback" not in err


def test_no_secret_in_the_environment_of_these_tests():
    # The subprocesses must not inherit a developer's real Twilio credentials.
    assert "TWILIO_AUTH_TOKEN" not in python_env() and "TWILIO_ACCOUNT_SID" not in python_env()
    assert os.environ.get("COMMPRO_ENV") in (None, "development")


async def test_sandbox_commands_find_the_running_server_and_say_what_happens(cli_env, tmp_path):
    """serve on a port of its own; the sandbox commands, run without PORT, still reach it."""
    port = unused_port()
    async with serve({**cli_env, "PORT": str(port), "HOST": "127.0.0.1"}) as banner:
        assert any(line.startswith("Twilio: the local sandbox") and "dev-secrets.json" in line for line in banner)
        assert f"Console: open http://127.0.0.1:{port}/ in a browser" in banner
        code, out, err = await run("sandbox", "sms", "--from", "+33612345678", "--to", "+15005550006",
                                   "--body", "hello", env=cli_env)
        assert code == 0, err
        assert json.loads(out)["webhook"]["status"] == 200
        # A number nobody owns: said, and a failure.
        code, out, err = await run("sandbox", "sms", "--from", "+33612345678", "--to", "+33700000001", env=cli_env)
        assert (code, out) == (1, "") and "nobody owns +33700000001" in err
        code, _, err = await run("sandbox", "call", "--from", "+33612345678", "--to", "+33700000001", env=cli_env)
        assert code == 1 and "nobody owns" in err
        # The controls, without the sandbox's credentials in the environment.
        code, out, err = await run("sandbox", "control", "--account", "suspended", env=cli_env)
        assert code == 0 and json.loads(out) == {"account": "suspended"}, err
        code, out, _ = await run("sandbox", "control", "--account", "active", "--prices-now", "--forget",
                                 "--summary-errors", "404,429", env=cli_env)
        assert code == 0 and json.loads(out) == {"account": "active"}
        code, _, err = await run("sandbox", "control", env=cli_env)
        assert code == 1 and "nothing to change" in err
        code, _, err = await run("sandbox", "control", "--summary-errors", "500", env=cli_env)
        assert code == 2 and "404 and 429" in err
        # A second server on the same port: one clear line, no traceback, and the first one's
        # record stays, so the commands still reach it.
        code, _, err = await run("serve", env={**cli_env, "PORT": str(port), "HOST": "127.0.0.1"})
        assert code == 1 and f"port {port} is already in use" in err and "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("commpro:")] == err.strip().splitlines()[-1:]
        code, _, err = await run("sandbox", "control", "--account", "active", env=cli_env)
        assert code == 0, err


async def test_banner_in_live_mode_says_where_the_credentials_came_from(cli_env):
    port = unused_port()
    env = {**cli_env, "PORT": str(port), "HOST": "127.0.0.1", "TWILIO_ACCOUNT_SID": "AC" + "1" * 28 + "abcd",
           "TWILIO_AUTH_TOKEN": "2" * 32}
    async with serve(env) as banner:
        assert "Twilio: live, account AC11...abcd (credentials from TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)" in banner
        assert not any(line.startswith("Token:") for line in banner)
        assert "2" * 32 not in "\n".join(banner)
    code, _, err = await run("sandbox", "control", "--prices-now", env=env)
    assert code == 1 and "only when no Twilio credentials are set" in err
