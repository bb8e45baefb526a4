"""`make bench`: CommPro against the reference stack (../shared/bench-peer) in one run, on one
PostgreSQL, with the same signed load; then lists at a million rows against ten thousand, and
memory over many requests. One Markdown table out, the same as JSON in .commpro/bench/.

S1 voice status callbacks, S2 inbound SMS and message status callbacks (closed loop, 32
connections) in BENCH_ROUNDS rounds (5), each of CommPro's three beside a load of the
reference's status callbacks of its own (in turn first and second), every load on SIDs no load
has posted yet; S3 inbound voice at a fixed 200/s (open loop) in BENCH_S3_ROUNDS rounds (3).
Medians over rounds, the ratio to the reference per pair (median, min, max), CPU per request of
the server, PostgreSQL and the load generator; each
beside the SQL ceiling of its statements at the same concurrency; S4/S5 lists; RSS growth over
BENCH_MEMORY_REQUESTS mixed webhooks. Knobs: BENCH_DURATION (s, default 10), BENCH_WARMUP (2),
BENCH_ROWS (1,000,000), BENCH_LIST_REQUESTS (200), BENCH_MEMORY_REQUESTS (100,000) and
BENCH_MEMORY_SECONDS (600, whichever comes first: a bound, not the measure; at 150 s a slow
machine once sent 82,500), DATABASE_URL (else embedded). Beside S3, the disk's fdatasync
(disk.py) and the CPU the hypervisor steals (steal.py) are sampled, to tell their stalls from
ours. Results are written as each phase ends, so an interrupted run still leaves what it measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil
from aiohttp.test_utils import unused_port

from commpro.auth import mint_token
from commpro.config import load_config
from commpro.db import create_pool, migrate
from commpro.logs import configure_logging
from tests.bench import ceiling, disk, lists, rounds, seed, stack, steal

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
S3_ROUNDS = int(os.environ.get("BENCH_S3_ROUNDS", "3"))
MEMORY_REQUESTS = int(os.environ.get("BENCH_MEMORY_REQUESTS", "100000"))
# ... or as many as fit in this time: `make bench` stays bounded on a busy machine.
MEMORY_SECONDS = float(os.environ.get("BENCH_MEMORY_SECONDS", "600"))
CONNS = 32
IDLE_SECONDS = 5
# SIDs per round: a status callback moves a call forward only the first time its SID comes (the
# load cycles the file: ringing, then in-progress, completed), so a round must post fewer than
# this: 100,000 is 8,000 rps over warm-up and timed part, longer runs get more.
SIDS = max(100_000, int(8_000 * (DURATION + WARMUP)))
RESULTS = stack.BUILD / "results.json"
STATUS, SMS, MSGSTATUS = ("S1 CommPro, voice status callback", "S2 CommPro, inbound SMS",
                          "S2 CommPro, message status callback")
REFERENCE, VOICE = "Reference stack, voice status callback", "S3 CommPro, inbound voice at 200/s"


say = stack.say


def save(report: dict) -> None:
    stack.save(RESULTS, report)


def webhook_rows(samples: dict[str, list[dict]], beside: dict[str, list[dict]],
                 ceilings: dict[str, float | None]) -> list[dict]:
    """The table's rows from the rounds so far: the reference (all its loads), S1 and S2 each
    against the reference's loads beside its own (`beside`); S3 at its fixed rate against none."""
    rows = []
    for name in (REFERENCE, STATUS, SMS, MSGSTATUS, VOICE):
        if samples[name]:
            row = rounds.summary(name, samples[name], samples[REFERENCE] if name == REFERENCE else beside.get(name))
            tps = ceilings.get(name)
            rows.append(row | {"sql_ceiling_tps": tps, "of_ceiling": row["rps"] / tps if tps else None})
    return rows


async def main(report: dict) -> None:
    stack.pin_self(1)
    configure_logging("WARNING", sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="commpro-bench-"))
    say("building the reference stack")
    peer_dir = stack.build_peer()
    server_url = stack.database_server_url()
    stale = await stack.drop_stale_databases(server_url)
    if stale:
        say(f"dropped {len(stale)} bench databases that killed runs left behind")
    database_url = await stack.fresh_database(server_url)
    # Connected for the whole run: another run's start drops only bench databases nobody is on.
    keeper = await asyncpg.connect(database_url)
    procs = []
    try:
        port = unused_port()
        env = stack.commpro_env(database_url, port, work / "data")
        config = load_config(env=env)
        pool = await create_pool(database_url)
        async with pool.acquire() as conn:
            await migrate(conn)
            started = time.perf_counter()
            async with seed.secondary_indexes_dropped(conn):
                say(f"seeding webhook fixtures: {ROUNDS} rounds of {SIDS:,} call and message SIDs")
                # The memory phase's mixed load posts a quarter of its requests as each kind.
                files = await seed.webhook_fixtures(conn, (peer_dir / "schema.sql").read_text(), stack.TO_NUMBER,
                                                    SIDS, ROUNDS, MEMORY_REQUESTS // 4 + 1, work)
                report["seed_webhooks_s"] = round(time.perf_counter() - started, 1)
                say(f"seeding lists: {seed.ROWS:,} calls and messages, and {seed.SMALL_ROWS:,}")
                await seed.list_rows(conn)
            report["seed_s"] = round(time.perf_counter() - started, 1)
        await pool.close()

        peer, peer_base = await stack.start_peer(peer_dir, database_url)
        procs.append(peer)
        commpro, base = await stack.start_commpro(env)
        procs.append(commpro)
        shared_load = peer_dir / "status-load.js"
        process = psutil.Process(commpro.pid)
        # The server's RSS at each phase's end: where memory grows, if it does.
        rss = report["rss_mb"]
        rss["started"] = process.memory_info().rss / 2**20
        meter = rounds.Meter(rounds.Timing(DURATION, WARMUP, CONNS), await rounds.postmaster(database_url), keeper)
        samples: dict[str, list[dict]] = {name: [] for name in (REFERENCE, STATUS, SMS, MSGSTATUS, VOICE)}

        # S3 first: after S2 it once had a p99 of 66 ms, from the price fetches each inbound SMS
        # leaves due 30 s later (a background job each) on the server's core. Those now fall due
        # after the run (stack.commpro_env); S3 still comes before any background work.
        # At rest once the servers' first seconds are over (their pools' backends start, plan
        # and cache their first statements then: PostgreSQL showed 100 ms/s in those).
        await asyncio.sleep(IDLE_SECONDS)
        report["idle_cpu_ms_per_s"] = await meter.idle(commpro.pid, IDLE_SECONDS)
        traces: list[tuple[float, float]] = []
        with disk.FsyncProbe(await disk.data_directory(database_url, work)) as probe, steal.StealProbe() as stolen:
            for n in range(S3_ROUNDS):
                say(f"S3: inbound voice at 200/s, round {n + 1} of {S3_ROUNDS}")
                trace = work / f"s3-trace-{n}.json"
                samples[VOICE].append(await meter.run(commpro.pid, stack.LOAD_JS, base, "voice",
                                                      ("--rate", "200", "--trace", str(trace))))
                traces += json.loads(trace.read_text())
        report["s3_fsync"] = probe.summary()
        report["s3_by_steal"] = steal.split(traces, stolen.readings) if stolen.readings else None
        report["webhooks"] = webhook_rows(samples, {}, {})
        rss["S3"] = process.memory_info().rss / 2**20
        save(report)
        # Each of CommPro's loads back to back with a reference load of its own, the two in turn
        # first: the machine's speed drifts by half over a minute (the reference's CPU per
        # request went from 253 to 440 µs in one run), and the first of a pair did better in 8
        # of 10 pairs, so a ratio is only as good as its pair is close and its order balanced.
        # The reference's loads each post a third of the round's call SIDs (each to its own
        # table, as CommPro's S1 posts them all): over a third, a load's SIDs come round again
        # as in-progress, still an update each.
        beside: dict[str, list[dict]] = {STATUS: [], SMS: [], MSGSTATUS: []}
        for n, sids in enumerate(files.rounds):
            say(f"S1/S2 round {n + 1} of {ROUNDS}: CommPro's status, SMS, message status, each beside the "
                "reference's status callbacks")
            thirds = seed.split_sids(sids.calls, 3)
            loads = {STATUS: (shared_load, "status", ("--sids", str(sids.calls))), SMS: (shared_load, "sms", ()),
                     MSGSTATUS: (stack.LOAD_JS, "msgstatus", ("--msids", str(sids.messages)))}
            for k, (name, (script, kind, extra)) in enumerate(loads.items()):
                pair = [meter.run(peer.pid, shared_load, peer_base, "status", ("--sids", str(thirds[k]))),
                        meter.run(commpro.pid, script, base, kind, extra)]
                if (n + k) % 2:
                    pair.reverse()
                first, second = await pair[0], await pair[1]
                reference, ours = (second, first) if (n + k) % 2 else (first, second)
                samples[REFERENCE].append(reference)
                beside[name].append(reference)
                samples[name].append(ours)
            report["webhooks"] = webhook_rows(samples, beside, {})
            rss[f"round {n + 1}"] = process.memory_info().rss / 2**20
            save(report)

        say("SQL ceilings")
        sids = files.ceiling.calls.read_text().split()
        msids = files.ceiling.messages.read_text().split()
        sql = await ceiling.asyncpg_tps(config, sids, msids, stack.TO_NUMBER, CONNS, min(DURATION, 5))
        peer_sql = ceiling.pgbench_tps(database_url, SIDS, CONNS, min(DURATION, 5), work)
        report["webhooks"] = webhook_rows(samples, beside, {REFERENCE: peer_sql, STATUS: sql["status"], SMS: sql["sms"],
                                                    MSGSTATUS: sql["msgstatus"], VOICE: sql["voice"]})
        rss["ceilings"] = process.memory_info().rss / 2**20
        save(report)

        # The rounds updated hundreds of thousands of calls and messages, which autovacuum takes
        # on in its own time: without this vacuum, a deep OFFSET page's SQL measured 1.2 ms for
        # the small user and then 4.3 ms for the big one (alone, both about 1.1); with it, 1.8
        # and 1.9.
        say("vacuuming what the webhook rounds changed")
        await seed.settle(keeper)
        say(f"S4/S5: lists, {lists.REQUESTS} requests per shape and size")
        tokens = {user: mint_token(config, user) for user in (seed.BIG, seed.SMALL)}
        report["lists"] = await lists.measure(base, database_url, tokens)
        rss["lists"] = process.memory_info().rss / 2**20
        save(report)

        say(f"memory: {MEMORY_REQUESTS:,} mixed webhooks")
        before = process.memory_info().rss
        mixed = await stack.load(stack.LOAD_JS, base, "mixed", duration=MEMORY_SECONDS, warmup=0, conns=CONNS,
                                 extra=("--requests", str(MEMORY_REQUESTS), "--sids", str(files.memory.calls),
                                        "--msids", str(files.memory.messages)))
        after = process.memory_info().rss
        rss["memory"] = after / 2**20
        report["memory"] = {"requests": mixed["requests"], "rss_before_mb": before / 2**20,
                            "rss_after_mb": after / 2**20, "growth_mb": (after - before) / 2**20,
                            "codes": mixed["codes"]}
        save(report)
    finally:
        for proc in procs:
            stack.stop(proc)
        await keeper.close()
        await stack.drop_database(server_url, database_url)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def webhook_line(r: dict) -> str:
    if r["vs_reference"] is None:
        versus = "fixed rate"
    else:
        versus = f"{r['vs_reference']:.2f} ({r['vs_reference_min']:.2f}–{r['vs_reference_max']:.2f})"
    cpu = " / ".join("n/a" if r["cpu_us"][part] is None else f"{r['cpu_us'][part]:,.0f}" for part in rounds.CPU_PARTS)
    ceiling_tps = f"{r['sql_ceiling_tps']:,.0f}" if r["sql_ceiling_tps"] else "n/a"
    of = f"{r['of_ceiling']:.2f}" if r["of_ceiling"] else "n/a"
    return (f"| {r['scenario']} | {r['rounds']} | {r['rps']:,.0f} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {versus} "
            f"| {cpu} | {ms(r.get('stolen_pct'))} | {ceiling_tps} | {of} |")


def table(report: dict) -> str:
    out = [f"Measured {report['when']} on {report['machine']}.", "",
           ("| Webhooks (32 connections), median over rounds | rounds | rps | p50 ms | p99 ms "
            "| × reference (min–max) | CPU µs/req server / PostgreSQL / load | CPU stolen % | SQL ceiling tps "
            "| of ceiling |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    out += [webhook_line(r) for r in report["webhooks"]]
    failed = {r["scenario"]: {c: n for c, n in r["codes"].items() if not c.startswith("2")} for r in report["webhooks"]}
    failed = {name: codes for name, codes in failed.items() if codes}
    out += ["", ("CPU stolen: the share of the machine's CPU time the hypervisor gave elsewhere during the loads "
                 "(/proc/stat's steal), median over rounds; where it is high, the rates measured the neighbours too.")]
    idle = report.get("idle_cpu_ms_per_s")
    if idle:
        out += ["", (f"At rest, before the loads: CommPro {ms(idle['server'])} ms of CPU per second, PostgreSQL "
                     f"{ms(idle['postgres'])}: at S3's 200 requests a second, each ms/s adds 5 µs to a request's share.")]
    fsync = report.get("s3_fsync")
    if fsync and fsync["samples"]:
        out += ["", (f"The disk during S3: an 8 KiB write's fdatasync beside PostgreSQL's data, every "
                     f"{fsync['interval_ms']} ms "
                     f"({fsync['samples']:,} of them), took p50 {fsync['p50_ms']:.2f} ms, p99 {fsync['p99_ms']:.2f} ms, "
                     f"max {fsync['max_ms']:.1f} ms ({fsync['over_10ms']} over {disk.SLOW_MS:.0f} ms). Each S3 call "
                     "commits before its TwiML goes back, one user's commits one after another: a stall there is "
                     "in S3's p99.")]
    by_steal = report.get("s3_by_steal")
    if by_steal:
        none, some = by_steal["none"], by_steal["some"]
        out += ["", (f"S3's requests by the CPU stolen while each was in flight (/proc/stat every 20 ms, in ticks of 10 ms): "
                     f"{none['requests']:,} with none stolen, p50 {ms(none['p50_ms'])} ms, p99 {ms(none['p99_ms'])} ms; "
                     f"{some['requests']:,} with some, p50 {ms(some['p50_ms'])} ms, p99 {ms(some['p99_ms'])} ms.")]
    if failed:
        out += ["", f"Answers other than 2xx: {failed}."]
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
    if report.get("rss_mb"):
        out.append("RSS after each phase, MB: " + ", ".join(f"{k} {v:.1f}" for k, v in report["rss_mb"].items()) + ".")
    out.append(f"Seeding took {report.get('seed_s')} s, of which {report.get('seed_webhooks_s')} s for the webhooks' SIDs.")
    return "\n".join(out)


if __name__ == "__main__":
    result: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": stack.machine(), "webhooks": [],
                    "lists": [], "memory": {}, "rss_mb": {}}
    try:
        asyncio.run(main(result))
    finally:
        save(result)
        print(table(result))
        print(f"\n(JSON: {RESULTS})", file=sys.stderr)
