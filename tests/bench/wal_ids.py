"""`python -m tests.bench.wal_ids`: the WAL an inbound SMS writes with random (v4) message ids
and with time-ordered ones (commpro/ids.py), `inbound_sms_batch` alone on one connection.

The case UUIDv7 is for: messages between two checkpoints few beside the primary key's leaves (a
big table, a steady trickle), where a random id's insert is nearly always the first touch of its
leaf since the checkpoint, and PostgreSQL writes that whole page to the WAL. Here: the lists'
users' rows (BENCH_ROWS messages, a million by default), then rounds of 150 batches of 16 with
each kind of id in turn, a CHECKPOINT before every other round. Prints the medians of bytes of
WAL and of PostgreSQL's CPU per message (the backend's: PostgreSQL on this machine).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import uuid

import psutil

from commpro.db import create_pool, migrate
from commpro.ids import uuid7
from commpro.logs import configure_logging
from commpro.messages import inbound_store
from commpro.numbers.store import insert_number
from tests.bench import rounds, seed, stack

ROUNDS, BATCHES, SIZE = int(os.environ.get("BENCH_ROUNDS", "8")), 150, 16
USER, TO = "wal-user", "+33123456789"


async def main() -> None:
    configure_logging("WARNING", sys.stderr)
    server_url = stack.database_server_url()
    url = await stack.fresh_database(server_url)
    try:
        pool = await create_pool(url)
        async with pool.acquire() as conn:
            await migrate(conn)
            number = await insert_number(conn, USER, TO, identity=USER)
            stack.say(f"seeding {seed.ROWS:,} messages")
            async with seed.secondary_indexes_dropped(conn):
                await seed.list_rows(conn)
        async with pool.acquire() as conn:
            backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
            jobs = inbound_store.Jobs("message-price", 60.0, "media-fetch")
            sent = 0

            def message(make_id) -> inbound_store.InboundSms:
                nonlocal sent
                sent += 1
                return inbound_store.InboundSms(
                    make_id(), USER, number["id"], "SM" + secrets.token_hex(16), "+3368" + str(7000000 + sent % 5000),
                    TO, (secrets.token_bytes(60), secrets.token_bytes(12)), 1, "GSM-7", 0, None, [], jobs, False)

            for _ in range(400):  # the 5,000 contacts and their conversations first
                await inbound_store.insert_inbound_batch(conn, [message(uuid.uuid4) for _ in range(SIZE)])
            await seed.settle(conn)
            kinds = {"random (v4)": uuid.uuid4, "time-ordered (v7)": uuid7}
            wal: dict[str, list[float]] = {name: [] for name in kinds}
            cpu: dict[str, list[float]] = {name: [] for name in kinds}
            for n in range(ROUNDS):
                if n % 2 == 0:
                    await conn.execute("CHECKPOINT")
                for name in (list(kinds) if n % 2 == 0 else list(kinds)[::-1]):
                    wal_before, cpu_before = await conn.fetchval(rounds.WAL_POSITION), rounds.tree_seconds(backend)
                    for _ in range(BATCHES):
                        await inbound_store.insert_inbound_batch(conn, [message(kinds[name]) for _ in range(SIZE)])
                    wal[name].append((await conn.fetchval(rounds.WAL_POSITION) - wal_before) / (BATCHES * SIZE))
                    cpu[name].append((rounds.tree_seconds(backend) - cpu_before) / (BATCHES * SIZE) * 1e6)
                stack.say(f"round {n + 1} of {ROUNDS}: " + ", ".join(
                    f"{name} {wal[name][-1]:,.0f} B, {cpu[name][-1]:.0f} µs" for name in kinds))
        await pool.close()
        print(f"\n{ROUNDS} rounds of {BATCHES * SIZE:,} messages per kind of id, a checkpoint before every other "
              f"round, on {seed.ROWS:,} messages; medians per message:\n")
        print("| ids | WAL bytes | PostgreSQL CPU µs |\n|---|---|---|")
        for name in kinds:
            print(f"| {name} | {statistics.median(wal[name]):,.0f} | {statistics.median(cpu[name]):.0f} |")
    finally:
        await stack.drop_database(server_url, url)


if __name__ == "__main__":
    asyncio.run(main())
