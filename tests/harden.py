"""`make harden`: fault scenarios against real processes, and one table of figures (issue 11).

    python -m tests.harden [--outage-s 10] [--fuzz-examples 100] [--only outage,twilio,...]

Everything runs on 127.0.0.1 against a PostgreSQL server of its own (embedded, in a temporary
directory), which the outage scenario stops and always starts again. Traffic is bounded in count
and time. The service runs as `python -m commpro serve` subprocesses, except where a scenario
reads the sandbox's memory (creates per key) or seeds rows (the fuzz): there it runs in a thread
of this process, on a real port all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import unused_port

from commpro.appkeys import pool_key
from commpro.config import load_config
from commpro.logs import configure_logging
from commpro.numbers.store import insert_number
from commpro.sandbox.state import sandbox_state_key
from tests.harden_support import (
    CONCURRENCY,
    PEER,
    Load,
    ServiceProcess,
    add_number,
    base_env,
    new_number,
    post_sms,
    sms_form,
    stored_sids,
)
from tests.pgcontrol import StoppablePostgres


class Table:
    """The figures, printed as one table at the end; `zero` marks those that must be 0."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool]] = []

    def add(self, scenario: str, figure: str, value: object, zero: bool = False) -> None:
        self.rows.append((scenario, figure, str(value), zero))
        print(f"  {scenario}: {figure} = {value}", flush=True)

    def render(self) -> str:
        widths = [max(len(r[i]) for r in self.rows + [("scenario", "figure", "value", False)]) for i in range(3)]
        line = f"| {{:{widths[0]}}} | {{:{widths[1]}}} | {{:>{widths[2]}}} | {{}} |"
        out = [line.format("scenario", "figure", "value", "must be 0"),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|---|"]
        for scenario, figure, value, zero in self.rows:
            flag = ("ok" if value == "0" else "NOT 0") if zero else ""
            out.append(line.format(scenario, figure, value, flag))
        return "\n".join(out)

    @property
    def failed(self) -> list[str]:
        return [f"{s}: {f} = {v}" for s, f, v, zero in self.rows if zero and v != "0"]


async def scenario_outage(table: Table, pg: StoppablePostgres, db: str, work: Path, outage_s: float) -> None:
    name = f"PostgreSQL stopped {outage_s:g} s"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        svc = ServiceProcess(base_env(db, work / "data", unused_port()), work / "outage.log")
        await svc.start(session)
        user, number = "harden-" + uuid.uuid4().hex[:8], new_number()
        await add_number(db, user, number)
        ws = await session.ws_connect(f"{svc.url}/api/events?token={svc.token(user)}")
        load = Load(session, svc, number)
        listen_s: list[float] = []
        marks: dict[str, float] = {}

        async def accepting() -> None:
            """The moment the server accepts connections again (pg_ctl's own wait polls)."""
            while True:
                try:
                    await (await asyncpg.connect(db, timeout=1)).close()
                    marks["up"] = time.monotonic()
                    return
                except (TimeoutError, OSError, asyncpg.PostgresError):
                    await asyncio.sleep(0.02)

        async def resync() -> None:
            # The stream carries the load's own events until it is closed with 4009: the LISTEN
            # connection is back, and clients are told to replay what they may have missed.
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
            marks["listen"] = time.monotonic()

        async def script() -> None:
            await asyncio.sleep(2)
            await pg.stop()
            load.phase = "outage"
            closed = asyncio.create_task(resync())
            await asyncio.sleep(outage_s)
            probe = asyncio.create_task(accepting())
            await pg.start()
            load.phase = "after"
            await asyncio.wait_for(asyncio.gather(probe, closed), 60)
            listen_s.append(marks["listen"] - marks["up"])
            await asyncio.sleep(2)

        try:
            await load.run_until(script)
        finally:
            await pg.start()  # always: whatever happened above
            await ws.close()
            svc.kill(signal.SIGTERM)
        lost = len(load.acked) - len(await stored_sids(db, load.acked))
        outage = load.by_phase.get("outage", Counter())
        table.add(name, "webhooks acknowledged", len(load.acked))
        table.add(name, "acknowledged but lost", lost, zero=True)
        table.add(name, "answers during the outage", ", ".join(f"{k or 'no answer'}: {v}"
                                                               for k, v in sorted(outage.items())) or "none")
        table.add(name, "5xx other than 503 during the outage",
                  sum(v for k, v in outage.items() if k >= 500 and k != 503), zero=True)
        after_up = [t for t in load.ok_at if "up" in marks and t >= marks["up"]]
        recovery = min(after_up) - marks["up"] if after_up else None
        table.add(name, "first 2xx after the database's return (s)",
                  f"{recovery:.2f}" if recovery is not None else "never")
        # Both from the moment the server accepts connections again.
        table.add(name, "LISTEN restored after the database's return (s)",
                  f"{listen_s[0]:.2f}" if listen_s else "never")
        lines = (work / "outage.log").read_text(errors="replace")
        events = Counter(re.findall(r'"event": ?"(database_(?:un)?available)"', lines))
        table.add(name, "log lines database_unavailable / _available",
                  f"{events['database_unavailable']} / {events['database_available']}")
        table.add(name, "tracebacks logged", lines.count("Traceback"), zero=True)


async def scenario_duplicates(table: Table, db: str, work: Path) -> None:
    name = "duplicate webhooks"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        svc = ServiceProcess(base_env(db, work / "data", unused_port()), work / "duplicates.log")
        await svc.start(session)
        user, number = "harden-" + uuid.uuid4().hex[:8], new_number()
        await add_number(db, user, number)
        forms = [sms_form(number) for _ in range(50)]
        statuses = Counter()
        for form in forms:  # each webhook 10 times at once
            for status in await asyncio.gather(*(post_sms(session, svc, form) for _ in range(10))):
                statuses[status] += 1
        svc.kill(signal.SIGTERM)
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM messages WHERE sid = any($1::text[])",
                                   [f["MessageSid"] for f in forms])
    finally:
        await conn.close()
    table.add(name, "webhooks x concurrent copies", f"{len(forms)} x 10")
    table.add(name, "answers", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    table.add(name, "duplicate rows", rows - len(forms), zero=True)


async def scenario_sigkill(table: Table, db: str, work: Path) -> None:
    name = "SIGKILL under load"
    port = unused_port()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        svc = ServiceProcess(base_env(db, work / "data", port), work / "sigkill.log")
        await svc.start(session)
        user, number = "harden-" + uuid.uuid4().hex[:8], new_number()
        await add_number(db, user, number)
        load = Load(session, svc, number)
        creates = Counter()

        async def creator() -> None:
            auth = {"Authorization": f"Bearer {svc.token(user)}"}
            while not load._stop.is_set():
                headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
                try:
                    async with session.post(svc.url + "/api/messages/send", headers=headers,
                                            json={"from": number, "to": PEER, "body": "x"}) as r:
                        creates[r.status] += 1
                except (TimeoutError, aiohttp.ClientError):
                    creates[0] += 1
                    return

        async def script() -> None:
            creators = [asyncio.create_task(creator()) for _ in range(4)]
            await asyncio.sleep(3)
            svc.kill(signal.SIGKILL)
            load._stop.set()
            await asyncio.gather(*creators)

        await load.run_until(script)
        restarted = ServiceProcess(base_env(db, work / "data", port), work / "sigkill.log")
        await restarted.start(session)
        await asyncio.sleep(5)  # room for whatever sweeps the service runs after a restart
        restarted.kill(signal.SIGTERM)
    conn = await asyncpg.connect(db)
    try:
        # Stuck: a retry would still be refused as in flight (409).
        stuck = await conn.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = $1 AND response IS NULL "
                                    "AND locked_until > clock_timestamp()", user)
        orphans = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE user_id = $1 AND direction = 'outbound' AND sid IS NULL "
            "AND status NOT IN ('failed', 'undelivered')", user)
    finally:
        await conn.close()
    lost = len(load.acked) - len(await stored_sids(db, load.acked))
    table.add(name, "creates answered before the kill", ", ".join(f"{k or 'cut'}: {v}" for k, v in
                                                                  sorted(creates.items())))
    table.add(name, "webhooks acknowledged but lost", lost, zero=True)
    table.add(name, "Idempotency-Keys stuck in flight", stuck, zero=True)
    table.add(name, "orphan rows after the sweep (no Twilio SID)", orphans, zero=True)


# The sandbox's create faults (sandbox/faults.py): each of the 20 keys' first create answers after
# the client's deadline (twilio.timeout_s is 1 s here), or drops the connection after creating.
TWILIO_FAULTS: tuple[dict, ...] = ({"createFaults": ["late"] * 20, "faultDelayS": 2},
                                   {"createFaults": ["drop"] * 20})


async def scenario_twilio(table: Table, pg_url: str, work: Path) -> None:
    from tests.conftest import create_database
    from tests.fuzz import ThreadedService

    db = await create_database(pg_url)
    env = base_env(db, work / "data-inproc", unused_port())
    with ThreadedService(load_config(env=env)) as svc:
        user, number = "harden-" + uuid.uuid4().hex[:8], new_number()
        svc.run(_insert(svc, user, number))
        state = svc.app[sandbox_state_key]
        auth = {"Authorization": f"Bearer {svc.token(user)}"}
        basic = aiohttp.BasicAuth(svc.config.twilio.account_sid, svc.config.twilio.auth_token)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            for fault in TWILIO_FAULTS:
                label = f"Twilio answering {fault['createFaults'][0]}"
                async with session.post(svc.url + "/_sandbox/control", json=fault, auth=basic) as r:
                    assert r.status == 200, f"the sandbox refused {fault}"
                answers, peers = Counter(), []
                for _ in range(20):  # 20 keys, each sent 3 times (a client retrying)
                    key, peer = uuid.uuid4().hex, new_number()
                    peers.append(peer)
                    for _attempt in range(3):
                        try:
                            async with session.post(svc.url + "/api/messages/send", headers={
                                    **auth, "Idempotency-Key": key}, json={"from": number, "to": peer,
                                                                           "body": "x"}) as r:
                                answers[r.status] += 1
                        except (TimeoutError, aiohttp.ClientError):
                            answers[0] += 1
                # Read from the sandbox's own memory: what "Twilio" created, per key.
                per_key = Counter(m.to for m in svc.run(state.messages_from(number)) if m.to in set(peers))
                table.add(label, "answers to 3 tries x 20 keys", ", ".join(f"{k or 'cut'}: {v}"
                                                                            for k, v in sorted(answers.items())))
                table.add(label, "keys never created at Twilio", sum(1 for p in peers if p not in per_key))
                table.add(label, "keys created more than once at Twilio", sum(1 for n in per_key.values() if n > 1),
                          zero=True)


async def _insert(svc, user: str, number: str) -> None:
    async with svc.app[pool_key].acquire() as conn:
        await insert_number(conn, user, number, forward_to=PEER)


def _series(text: str) -> int:
    from tests.test_hostile import series

    return len(series(text))


async def scenario_metrics(table: Table, db: str, work: Path) -> None:
    name = "hostile traffic vs /metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        svc = ServiceProcess(base_env(db, work / "data", unused_port()), work / "metrics.log")
        await svc.start(session)

        async def scrape() -> str:
            async with session.get(svc.url + "/metrics") as r:
                return await r.text()

        sem = asyncio.Semaphore(CONCURRENCY)
        statuses = Counter()

        async def hostile(i: int) -> None:
            letters = "".join(chr(97 + int(d)) for d in f"{i:05d}")
            async with sem:
                for method, path in (("POST", "/webhook/" + letters), ("GET", "/nowhere/" + letters),
                                     ("DELETE", f"/api/calls/{uuid.uuid4()}")):
                    async with session.request(method, svc.url + path, data={"a": "b"}) as r:
                        statuses[r.status] += 1

        await hostile(99999)  # once, for the series such traffic legitimately uses (route templates)
        await scrape()
        before = await scrape()
        await asyncio.gather(*(hostile(i) for i in range(1000)))
        after = await scrape()
        svc.kill(signal.SIGTERM)
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    table.add(name, "hostile requests", f"{sum(statuses.values())} ({answers})")
    # Request and signature series, the sandbox's routes aside (the service's own background
    # calls to its sandbox come and go whatever the traffic).
    table.add(name, "series before / after", f"{_series(before)} / {_series(after)}")
    table.add(name, "/metrics bytes before / after", f"{len(before)} / {len(after)}")
    table.add(name, "series added", _series(after) - _series(before), zero=True)


async def scenario_fuzz(table: Table, pg_url: str, work: Path, examples: int) -> None:
    from tests.conftest import create_database
    from tests.fuzz import FUZZ_ENV, ThreadedService, fuzz, object_level_authorization, seed_user

    name = "schemathesis fuzz"
    db = await create_database(pg_url)
    env = {**base_env(db, work / "data-fuzz", unused_port()), **FUZZ_ENV}
    svc = ThreadedService(load_config(env=env))
    with svc:
        owned = await asyncio.to_thread(seed_user, svc, "fuzz-a-" + uuid.uuid4().hex[:8], new_number())
        result = await asyncio.to_thread(fuzz, svc, svc.token(owned.user), examples=examples, seed=20261121,
                                         progress=lambda line: print("   ", line, flush=True))
        bola_cases, bola_failures = await asyncio.to_thread(object_level_authorization, svc, owned,
                                                            "fuzz-b-" + uuid.uuid4().hex[:8])
    for failure in result.failures + bola_failures:
        print("\n" + failure[:3000], flush=True)
    table.add(name, "cases (positive + negative)", result.cases)
    table.add(name, "answers", ", ".join(f"{k}: {v}" for k, v in sorted(result.by_status.items())))
    table.add(name, "5xx", sum(v for k, v in result.by_status.items() if k >= 500), zero=True)
    table.add(name, "check failures", len(result.failures), zero=True)
    table.add(name, "object-level authorisation: requests / failures", f"{bola_cases} / {len(bola_failures)}")
    table.add(name, "object-level authorisation failures", len(bola_failures), zero=True)


SCENARIOS = ("outage", "twilio", "sigkill", "duplicates", "fuzz", "metrics")


async def main(args: argparse.Namespace) -> int:
    from tests.conftest import create_database

    table = Table()
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    # Kept after the run (the database aside): the service processes' logs are the evidence.
    work = Path(tempfile.mkdtemp(prefix="commpro-harden-"))
    pg = StoppablePostgres(work / "pg")
    try:
        db = await create_database(pg.url)
        print(f"PostgreSQL of its own under {work}; logs of the service processes there too", flush=True)
        steps = {
            "outage": lambda: scenario_outage(table, pg, db, work, args.outage_s),
            "twilio": lambda: scenario_twilio(table, pg.url, work),
            "sigkill": lambda: scenario_sigkill(table, db, work),
            "duplicates": lambda: scenario_duplicates(table, db, work),
            "fuzz": lambda: scenario_fuzz(table, pg.url, work, args.fuzz_examples),
            "metrics": lambda: scenario_metrics(table, db, work),
        }
        for step in SCENARIOS:
            if step in only:
                print(f"-- {step}", flush=True)
                started = time.monotonic()
                try:
                    await steps[step]()
                except Exception as exc:  # noqa: BLE001 - one scenario's failure is a row, not the end
                    table.add(step, "scenario error", f"{type(exc).__name__}: {exc}", zero=True)
                print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        await pg.start()
        pg.close()
        shutil.rmtree(work / "pg", ignore_errors=True)
    print()
    print(f"make harden on {platform.node()}: {platform.platform()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(table.render())
    if table.failed:
        print("\nNOT ZERO: " + "; ".join(table.failed))
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--fuzz-examples", type=int, default=100)
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(SCENARIOS))
    arguments = parser.parse_args()
    # The in-process services (fuzz, Twilio scenario) log to a file, not over the table.
    with open(Path(tempfile.gettempdir()) / "commpro-harden-inproc.log", "w") as inproc_log:
        configure_logging("INFO", inproc_log)
        sys.exit(asyncio.run(main(arguments)))
