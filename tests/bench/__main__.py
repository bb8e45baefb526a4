"""`make bench`: CommPro against the reference stack (../shared/bench-peer) in one run, on one
PostgreSQL, with the same signed load; then lists at a million rows against ten thousand, and
memory over many requests. One Markdown table out, the same as JSON in .commpro/bench/.

S1 voice status callbacks, S2 inbound SMS and message status callbacks (closed loop, 32
connections), S3 inbound voice at a fixed 200/s (open loop), each beside the SQL ceiling of its
statements at the same concurrency; S4/S5 lists; RSS growth over BENCH_MEMORY_REQUESTS mixed
webhooks. Knobs: BENCH_DURATION (s, default 10), BENCH_WARMUP (2), BENCH_ROWS (1,000,000),
BENCH_LIST_REQUESTS (200), BENCH_MEMORY_REQUESTS (100,000) and BENCH_MEMORY_SECONDS (150, whichever
comes first), DATABASE_URL (else embedded). Results are written as each phase ends, so an
interrupted run still leaves what it measured.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
from aiohttp.test_utils import unused_port

from commpro.auth import mint_token
from commpro.config import load_config
from commpro.db import create_pool, migrate
from commpro.logs import configure_logging
from tests.bench import ceiling, lists, seed, stack

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
MEMORY_REQUESTS = int(os.environ.get("BENCH_MEMORY_REQUESTS", "100000"))
# ... or as many as fit in this time: `make bench` stays bounded on a busy machine.
MEMORY_SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "150"))
CONNS = 32
SIDS = 100_000  # more than a run posts, so every status callback moves a call forward
RESULTS = stack.BUILD / "results.json"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> str:
    load1, _, _ = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, load average {load1:.1f} at start, "
            f"{'server on core 0, load on core 1' if stack.two_cores() else 'not pinned'}")


def save(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


async def main(report: dict) -> None:
    stack.pin_self(1)
    configure_logging("WARNING", sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="commpro-bench-"))
    say("building the reference stack")
    peer_dir = stack.build_peer()
    server_url = stack.database_server_url()
    database_url = await stack.fresh_database(server_url)
    procs = []
    try:
        port = unused_port()
        env = stack.commpro_env(database_url, port, work / "data")
        config = load_config(env=env)
        pool = await create_pool(database_url)
        async with pool.acquire() as conn:
            await migrate(conn)
            say("seeding webhook fixtures")
            files = await seed.webhook_fixtures(conn, (peer_dir / "schema.sql").read_text(), stack.TO_NUMBER, SIDS,
                                                work)
            say(f"seeding lists: {seed.ROWS:,} calls and messages, and {seed.SMALL_ROWS:,}")
            started = time.perf_counter()
            await seed.list_rows(conn)
            report["seed_s"] = round(time.perf_counter() - started, 1)
        await pool.close()

        peer, peer_base = await stack.start_peer(peer_dir, database_url)
        procs.append(peer)
        commpro, base = await stack.start_commpro(env)
        procs.append(commpro)
        shared_load = peer_dir / "status-load.js"
        timing = {"duration": DURATION, "warmup": WARMUP, "conns": CONNS}

        # S3 first: the other scenarios leave thousands of price fetches due 30 s later (a
        # background job each), whose work shares the server's core with the TwiML it times.
        say("S3: inbound voice at 200/s")
        s3 = await stack.load(stack.LOAD_JS, base, "voice", **timing, extra=("--rate", "200"))
        say("S1: status callbacks, reference stack then CommPro")
        ref = await stack.load(shared_load, peer_base, "status", **timing, extra=("--sids", str(files["calls"])))
        s1 = await stack.load(shared_load, base, "status", **timing, extra=("--sids", str(files["calls"])))
        say("S2: inbound SMS, message status callbacks")
        s2 = await stack.load(shared_load, base, "sms", **timing)
        s2b = await stack.load(stack.LOAD_JS, base, "msgstatus", **timing, extra=("--msids", str(files["messages"])))
        say("SQL ceilings")
        sids = files["ceiling_calls"].read_text().split()
        msids = files["messages"].read_text().split()
        sql = await ceiling.asyncpg_tps(config, sids, msids, stack.TO_NUMBER, CONNS, min(DURATION, 5))
        peer_sql = ceiling.pgbench_tps(database_url, SIDS, CONNS, min(DURATION, 5), work)
        for name, result, sql_tps in (
            ("Reference stack, voice status callback", ref, peer_sql),
            ("S1 CommPro, voice status callback", s1, sql["status"]),
            ("S2 CommPro, inbound SMS", s2, sql["sms"]),
            ("S2 CommPro, message status callback", s2b, sql["msgstatus"]),
            ("S3 CommPro, inbound voice at 200/s", s3, sql["voice"]),
        ):
            # S3 runs at a fixed rate: its rps says nothing against the reference's closed loop.
            fixed = result is s3
            report["webhooks"].append({"scenario": name, **result,
                                       "vs_reference": None if fixed else result["rps"] / ref["rps"],
                                       "sql_ceiling_tps": sql_tps,
                                       "of_ceiling": result["rps"] / sql_tps if sql_tps else None})
        save(report)

        say(f"S4/S5: lists, {lists.REQUESTS} requests per shape and size")
        tokens = {user: mint_token(config, user) for user in (seed.BIG, seed.SMALL)}
        report["lists"] = await lists.measure(base, database_url, tokens)
        save(report)

        say(f"memory: {MEMORY_REQUESTS:,} mixed webhooks")
        process = psutil.Process(commpro.pid)
        before = process.memory_info().rss
        mixed = await stack.load(stack.LOAD_JS, base, "mixed", duration=MEMORY_SECONDS, warmup=0, conns=CONNS,
                                 extra=("--requests", str(MEMORY_REQUESTS), "--sids", str(files["calls"]),
                                        "--msids", str(files["messages"])))
        after = process.memory_info().rss
        report["memory"] = {"requests": mixed["requests"], "rss_before_mb": before / 2**20,
                            "rss_after_mb": after / 2**20, "growth_mb": (after - before) / 2**20,
                            "codes": mixed["codes"]}
        save(report)
    finally:
        for proc in procs:
            stack.stop(proc)
        await stack.drop_database(server_url, database_url)


def table(report: dict) -> str:
    out = [f"Measured {report['when']} on {report['machine']}.", "",
           "| Webhooks (32 connections) | rps | p50 ms | p99 ms | × reference | SQL ceiling tps | of ceiling |",
           "|---|---|---|---|---|---|---|"]
    for r in report["webhooks"]:
        ceiling_tps = f"{r['sql_ceiling_tps']:,.0f}" if r["sql_ceiling_tps"] else "n/a"
        of = f"{r['of_ceiling']:.2f}" if r["of_ceiling"] else "n/a"
        versus = f"{r['vs_reference']:.2f}" if r["vs_reference"] is not None else "fixed rate"
        out.append(f"| {r['scenario']} | {r['rps']:,.0f} | {r['p50_ms']} | {r['p99_ms']} | {versus} "
                   f"| {ceiling_tps} | {of} |")
    out += ["", (f"| Lists, p50 / p95 ms ({seed.SMALL_ROWS:,} vs {seed.ROWS:,} rows) | 10k | 1M | ratio p50 "
                 "| SQL p50 10k / 1M | items 10k / 1M |"), "|---|---|---|---|---|---|"]
    for r in report["lists"]:
        out.append(f"| {r['request']} | {r['small_p50']:.1f} / {r['small_p95']:.1f} | {r['big_p50']:.1f} / "
                   f"{r['big_p95']:.1f} | {r['ratio_p50']:.2f} | {r['small_sql_p50']:.2f} / {r['big_sql_p50']:.2f} "
                   f"| {r['small_items']} / {r['big_items']} |")
    m = report["memory"]
    if m:
        out += ["", (f"Memory: RSS {m['rss_before_mb']:.1f} MB -> {m['rss_after_mb']:.1f} MB "
                    f"({m['growth_mb']:+.1f} MB) over {m['requests']:,} mixed webhooks; codes {m['codes']}.")]
    out.append(f"Seeding took {report.get('seed_s')} s.")
    return "\n".join(out)


if __name__ == "__main__":
    result: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "webhooks": [],
                    "lists": [], "memory": {}}
    try:
        asyncio.run(main(result))
    finally:
        save(result)
        print(table(result))
        print(f"\n(JSON: {RESULTS})", file=sys.stderr)
