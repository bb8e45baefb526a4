"""The processes a bench run needs: PostgreSQL, the reference stack, CommPro, the load.

Servers go on core 0, this process and the load on core 1, where the machine has two cores;
PostgreSQL is left to the scheduler, as it would be beside either stack.
"""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import psutil
from aiohttp.test_utils import unused_port

REPO = Path(__file__).resolve().parents[2]
# The reference stack ships beside the repository (../shared); it is built outside tracked files.
PEER_SOURCE = REPO.parent / "shared" / "bench-peer"
BUILD = REPO / ".commpro" / "bench"
PEER_FILES = ("server.js", "status-load.js", "package.json", "package-lock.json", "schema.sql")
LOAD_JS = Path(__file__).resolve().parent / "load.js"
ACCOUNT_SID = "AC" + "a1" * 16  # the account the load generators post as
AUTH_TOKEN = "bench-auth-token-" + "0" * 16
JWT_SECRET = "bench-jwt-secret-of-at-least-32-characters"
TO_NUMBER = "+33123456789"
DEVNULL = subprocess.DEVNULL


# Read once, before this process pins itself to one core.
TWO_CORES = len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def two_cores() -> bool:
    return TWO_CORES


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if two_cores() else argv


def pin_self(core: int) -> None:
    if two_cores():
        os.sched_setaffinity(0, {core})


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def save(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def machine() -> str:
    load1, _, _ = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, load average {load1:.1f} at start, "
            f"{'servers on core 0, load on core 1' if two_cores() else 'not pinned'}")


def database_server_url() -> str:
    """DATABASE_URL's server, or the embedded one kept under .commpro/bench/pg between runs."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from commpro.embedded import embedded_database_url

    return embedded_database_url(BUILD / "pg", database="postgres")


BENCH_PREFIX = "commpro_bench_"


async def fresh_database(server_url: str) -> str:
    from tests.conftest import create_database

    return await create_database(server_url, prefix=BENCH_PREFIX)


# $1: the prefix as a LIKE pattern (its `_` escaped).
STALE_DATABASES = """
SELECT d.datname FROM pg_database d
WHERE d.datname LIKE $1 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datid = d.oid)
ORDER BY d.datname
"""


async def drop_stale_databases(server_url: str) -> list[str]:
    """Drop the bench databases nobody is connected to: a run that was killed leaves its own
    (a few GB each after the seeding). One in use, by a run going on, is left alone."""
    conn = await asyncpg.connect(server_url)
    dropped = []
    try:
        for name in [r["datname"] for r in await conn.fetch(STALE_DATABASES, BENCH_PREFIX.replace("_", "\\_") + "%")]:
            try:
                await conn.execute(f'DROP DATABASE "{name}"')  # no FORCE: a run that just connected keeps it
            except asyncpg.ObjectInUseError:
                continue
            dropped.append(name)
    finally:
        await conn.close()
    return dropped


def database_name(url: str) -> str:
    """The database of a URL (its path; the query may hold a socket directory with slashes)."""
    return urlsplit(url).path.lstrip("/")


async def drop_database(server_url: str, url: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    finally:
        await conn.close()


def build_peer() -> Path:
    """A copy of the reference stack with its node_modules (npm ci once, again if it changed)."""
    if shutil.which("node") is None or not PEER_SOURCE.is_dir():
        raise SystemExit(f"the reference stack needs node and {PEER_SOURCE}")
    target = BUILD / "bench-peer"
    target.mkdir(parents=True, exist_ok=True)
    changed = False
    for name in PEER_FILES:
        if not (target / name).exists() or not filecmp.cmp(PEER_SOURCE / name, target / name, shallow=False):
            shutil.copy2(PEER_SOURCE / name, target / name)
            changed = True
    if changed or not (target / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True)
    return target


async def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args} exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"{url} not ready after {timeout_s} s")
            await asyncio.sleep(0.2)


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """A server for the whole run (Popen, not asyncio's: it outlives no loop and is stopped by pid)."""
    return subprocess.Popen(argv, stdout=DEVNULL, stderr=DEVNULL, **kwargs)


async def start_peer(peer_dir: Path, database_url: str) -> tuple[subprocess.Popen, str]:
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": database_url, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "PUBLIC_BASE_URL": base}
    proc = spawn(pinned(0, ["node", "server.js"]), cwd=peer_dir, env=env)
    await ready_or_stopped(base + "/", proc)
    return proc, base


def commpro_env(database_url: str, port: int, data_dir: Path) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "PORT": str(port), "HOST": "127.0.0.1",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "JWT_SECRET": JWT_SECRET,
            "COMMPRO_APP_DATA_DIR": str(data_dir), "LOG_LEVEL": "INFO",
            # Production's log lines (JSON), not development's console rendering, which costs more.
            "LOG_FORMAT": "json",
            # Each inbound SMS enqueues a price fetch due 30 s later, as in production; here it would
            # go to api.twilio.com with a made-up account, and with rounds alternating, thousands
            # would run on the server's core during the next round's reference load. The jobs are
            # still enqueued by the webhooks (their cost counts); they fall due after the run.
            "COMMPRO_PRICES_FIRST_AFTER_S": "86400"}


async def start_commpro(env: dict[str, str], cwd: Path = REPO) -> tuple[subprocess.Popen, str]:
    """`python -m commpro serve` as in production: access log (to /dev/null), metrics, auth. The
    code is `cwd`'s (`-m` puts it first on the path), another revision's in an A/B run."""
    base = f"http://127.0.0.1:{env['PORT']}"
    proc = spawn(pinned(0, [sys.executable, "-m", "commpro", "serve"]), cwd=cwd, env={**os.environ, **env})
    await ready_or_stopped(base + "/healthz", proc)
    return proc, base


async def ready_or_stopped(url: str, proc: subprocess.Popen) -> None:
    """Ready, or stopped before the error goes up: a server never ready would stay on core 0."""
    try:
        await wait_ready(url, proc)
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def load(script: Path, base: str, kind: str, *, duration: float, warmup: float, conns: int = 32,
               extra: tuple[str, ...] = ()) -> dict:
    """One run of a node load generator on core 1; its JSON line."""
    argv = pinned(1, ["node", str(script), "--base", base, "--token", AUTH_TOKEN, "--kind", kind, "--to", TO_NUMBER,
                      "--conns", str(conns), "--duration", str(duration), "--warmup", str(warmup), *extra])
    if script.name == "status-load.js":
        argv += ["--path", {"status": "/webhook/voice/status", "sms": "/webhook/sms", "voice": "/webhook/voice"}[kind]]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise SystemExit(f"load generator failed: {argv}")
    return json.loads(out.decode().strip().splitlines()[-1])
