"""The SQL ceiling of each webhook: its statements alone, at the load's concurrency.

CommPro's are the same store functions its handlers call, each statement its own transaction as
in the handlers, through an asyncpg pool the size of the server's, 32 at a time (no HTTP, no
signature, no log). The status callbacks' batch statement runs with one callback in it: the
ceiling without group commit, which the server's batches can pass. The
reference stack's single UPDATE goes through pgbench, as node-postgres would send it.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg

from commpro.calls import inbound_store as inbound_calls
from commpro.calls import store as calls
from commpro.calls.prices import PRICES as CALL_PRICES
from commpro.config import Config
from commpro.db import create_pool
from commpro.events import store as events
from commpro.ids import uuid7
from commpro.keys import KeyRing
from commpro.messages import inbound_store as inbound
from commpro.messages import status_store as message_statuses
from commpro.messages import store as messages
from commpro.messages.content import seal
from commpro.messages.media import MEDIA_FETCH
from commpro.messages.prices import PRICES
from commpro.numbers import store as numbers
from commpro.quality.poller import VOICE_INSIGHTS
from tests.bench.seed import CALLER
from tests.bench.stack import pinned

PEER_UPDATE = """\\set i random(1, {count})
UPDATE peer_calls SET status = 'ringing', status_rank = 1, duration_s = COALESCE(NULL::int, duration_s),
  updated_at = now() WHERE sid = 'CAc' || md5('CAc' || :i) AND status_rank < 1;
"""


def pgbench_tps(database_url: str, count: int, conns: int, duration: float, work: Path) -> float | None:
    """The reference UPDATE's ceiling in transactions per second, or None without pgbench."""
    from commpro.embedded import load_pgserver  # it ships a pgbench of its server's version

    binary = Path(load_pgserver().__file__).parent / "pginstall" / "bin" / "pgbench"
    binary = str(binary) if binary.exists() else shutil.which("pgbench")
    if binary is None:
        return None
    script = work / "peer-update.sql"
    script.write_text(PEER_UPDATE.format(count=count))
    out = subprocess.run(pinned(1, [binary, "-n", "-M", "prepared", "-c", str(conns), "-j", "1",
                                    "-T", str(int(duration)), "-f", str(script), database_url]),
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("tps"))
    return float(line.split("=")[1].split()[0])


async def _drive(pool: asyncpg.Pool, op, conns: int, duration: float) -> float:
    """`op` as its handler runs it: statements that are their own transactions."""
    done = 0
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            async with pool.acquire() as conn:
                await op(conn)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return done / (time.perf_counter() - started)


async def asyncpg_tps(config: Config, ceiling_sids: list[str], message_sids: list[str], to_number: str,
                      conns: int, duration: float) -> dict[str, float]:
    """Transactions per second of each webhook's statements, 32 at a time."""
    pool = await create_pool(config.database.url, max_size=config.database.pool_max)
    keyring = KeyRing(config.crypto)
    sids, msids, n = itertools.cycle(ceiling_sids), itertools.cycle(message_sids), itertools.count()
    owner: dict[str, asyncpg.Record] = {}
    msg_status = itertools.cycle(["sent"] * len(message_sids) + ["delivered"] * len(message_sids))
    # The jobs the statements enqueue fall due when the server's would: with the bench's settings,
    # after the run. Due sooner, the ceiling's price fetches ran in the server during the memory
    # phase (its RSS grew 7.5 MB there; 0.2 MB without them).
    price_after_s, quality_after_s = config.prices.first_after_s, config.quality.first_fetch_after_s

    async def status(conn: asyncpg.Connection) -> None:
        # The batch statement the handler submits to, with one callback in it: the ceiling
        # without group commit.
        item = {"callId": None, "sid": next(sids), "status": "ringing", "rank": 1, "seq": 0, "duration": None,
                "error": None, "leg": None, "parent": None, "target": CALLER, "device": "phone", "accepts": False}
        await calls.apply_status_callbacks(conn, [item], price_kind=CALL_PRICES.kind, price_after_s=price_after_s,
                                           quality_kind=VOICE_INSIGHTS, quality_after_s=quality_after_s,
                                           channel=events.CHANNEL)

    async def sms(conn: asyncpg.Connection) -> None:
        # The batch statement the handler submits to, with one message in it: the ceiling
        # without group commit (the webhook's owner is remembered and its key cached).
        number = owner.get(to_number) or await numbers.get_number_owner(conn, to_number)
        owner[to_number] = number
        user, message_id, i = number["user_id"], uuid7(), next(n)
        sender = "+3368" + str(7000000 + i % 5000)
        key = keyring.cached_key(user) or await keyring.data_key(conn, user, create=True)
        body = f"Bonjour, message de charge numero {i}".encode()
        await inbound.insert_inbound_batch(conn, [inbound.InboundSms(
            message_id, user, number["id"], "SM" + uuid.uuid4().hex, sender, to_number,
            seal(key, "body", user, message_id, body), 1, "GSM-7", 0, None, [],
            inbound.Jobs(PRICES.kind, price_after_s, MEDIA_FETCH), erase=False)])

    async def message_status(conn: asyncpg.Connection) -> None:
        sid, state = next(msids), next(msg_status)
        item = {"messageId": None, "sid": sid, "status": state, "rank": messages.STATUS_RANK[state], "error": None,
                "errorMessage": None, "erase": False}
        await message_statuses.apply_status_callbacks(conn, [item], price_kind=PRICES.kind, price_after_s=price_after_s,
                                                      channel=events.CHANNEL)

    async def voice(conn: asyncpg.Connection) -> None:
        await inbound_calls.insert_inbound_call(conn, to_number, "CA" + uuid.uuid4().hex, CALLER)

    try:
        return {name: await _drive(pool, op, conns, duration)
                for name, op in (("status", status), ("sms", sms), ("msgstatus", message_status), ("voice", voice))}
    finally:
        await pool.close()
