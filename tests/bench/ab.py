"""`python -m tests.bench.ab BASE [CHANGE]` (`make ab`): two revisions of CommPro under one
webhook load, in paired rounds, to tell whether a change is faster.

A change's effect on this 2-core machine is often smaller than the machine's drift between two
runs of `make bench` (S1's ratio to the reference went from 1.16 to 1.63 within one run). So the
two revisions run in one session, each as its own server (`python -m commpro serve` in a copy of
that revision's files, on this checkout's virtualenv) on its own database (migrated by that
revision's `commpro migrate`, seeded by this checkout's seed.py), and each round loads one then
the other, the order alternating. Going first is worth a tenth or more either way, so the figure
to read is by pairs of rounds, one with each first (compare). A load of the reference stack's
status callbacks opens each round, a gauge of the machine's speed; each revision's ratio to it
is the figure `make bench` reports.

BASE and CHANGE are git revisions (23a2969 or later: an older one refuses a setting the bench
passes); CHANGE is the working tree by default ("."), uncommitted edits included. One revision
twice (an A/A run) shows the noise that a change must beat.

Knobs: --kind status|sms|msgstatus (status), --rounds (8, even), --duration (8 s, after 1 s of
warm-up), DATABASE_URL (else the embedded PostgreSQL). Prints one Markdown table, and writes it
with every round's figures as JSON to .commpro/bench/ab.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiohttp.test_utils import unused_port

from commpro.logs import configure_logging
from tests.bench import rounds, seed, stack

RESULTS = stack.BUILD / "ab.json"
WORKING_TREE = "."
WARMUP = 1.0
# SIDs a load may post per second: a status moves forward once per SID, and the loads cycle
# their files from the top (S1 runs at about 3,000 a second here).
SIDS_PER_S = 6_000
KINDS = ("status", "sms", "msgstatus")


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(stack.REPO), *args], check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def checkout(revision: str, into: Path) -> tuple[Path, str]:
    """The files of `revision` (a copy under `into`; the repository itself for the working tree)
    and a label for the report: the short commit, "+ edits" when the working tree has any."""
    if revision == WORKING_TREE:
        edits = _git("status", "--porcelain")
        return stack.REPO, _git("rev-parse", "--short", "HEAD") + (" + edits" if edits else "")
    commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    tree = into / commit
    if not tree.is_dir():
        # Unpacked beside, then renamed: a tree that is there is whole.
        partial = into / f"{commit}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(stack.REPO), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        partial.rename(tree)
    return tree, _git("rev-parse", "--short", commit)


async def prepare(tree: Path, url: str, conn: asyncpg.Connection, peer_schema: str, count: int, n_rounds: int,
                  work: Path) -> seed.Fixtures:
    """`url` (`conn` on it), a database of its own, migrated by `tree`'s code, with each round's
    SIDs (seeded by this checkout's tests/bench/seed.py)."""
    # Its own port: the configuration wants one, though `migrate` serves nothing.
    env = stack.commpro_env(url, unused_port(), work / "data") | {"LOG_LEVEL": "WARNING"}
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "commpro", "migrate", cwd=tree,
                                                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    if await migrate.wait():
        raise SystemExit(f"commpro migrate failed in {tree}")
    work.mkdir(parents=True, exist_ok=True)
    fixtures = await seed.webhook_fixtures(conn, peer_schema, stack.TO_NUMBER, count, n_rounds, 1, work)
    await seed.settle(conn)
    return fixtures


async def prepare_reference(conn: asyncpg.Connection, peer_schema: str, count: int, n_rounds: int,
                            work: Path) -> list[Path]:
    """The reference stack's database (`conn`'s): its own, so that its loads' dead rows (and
    autovacuum's work on them) land on neither revision's."""
    work.mkdir(parents=True, exist_ok=True)
    files = await seed.peer_fixtures(conn, peer_schema, count, n_rounds, work)
    await seed.settle(conn)
    return files


def load_of(kind: str, peer_dir: Path, sids: seed.Sids | Path, base: str) -> tuple:
    """Meter.run's (script, base, kind, arguments) for one load of `kind` on a round's SIDs (a
    file of call SIDs alone for the reference's status callbacks)."""
    shared = peer_dir / "status-load.js"
    calls = sids if isinstance(sids, Path) else sids.calls
    return {"status": (shared, base, "status", ("--sids", str(calls))),
            "sms": (shared, base, "sms", ()),
            "msgstatus": (stack.LOAD_JS, base, "msgstatus", ("--msids", str(getattr(sids, "messages", ""))))}[kind]


def compare(base: list[dict], change: list[dict]) -> dict:
    """The change's rate over the base's, round by round, and by pairs of rounds: the geometric
    mean of a round with the base first and the next with the change first. Going first is
    worth a tenth or more either way on this machine (in one run the change was faster in 5 of
    the 6 rounds it went first, slower in 5 of the 6 it went second), so a round's ratio says as
    much about the order as about the code; a pair of rounds cancels the order. The figure to
    read is the pairs': their median, range, and how many were faster."""
    ratios = [c["rps"] / b["rps"] if b["rps"] else None for b, c in zip(base, change, strict=True)]
    pairs = [math.sqrt(one * two) for one, two in zip(ratios[0::2], ratios[1::2], strict=False)
             if one is not None and two is not None]
    return {"ratios": [None if r is None else round(r, 3) for r in ratios],
            "pairs": [round(p, 3) for p in pairs], "median": rounds.median(pairs),
            "min": round(min(pairs), 2) if pairs else None, "max": round(max(pairs), 2) if pairs else None,
            "faster": sum(p > 1 for p in pairs), "slower": sum(p < 1 for p in pairs)}


def first_in_round(n: int) -> int:
    """Which revision (0 base, 1 change) is loaded first in round `n`: in turn."""
    return n % 2


async def main(args: argparse.Namespace, report: dict) -> None:
    stack.pin_self(1)
    configure_logging("WARNING", sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="commpro-ab-"))
    peer_dir = stack.build_peer()
    server_url = stack.database_server_url()
    await stack.drop_stale_databases(server_url)
    trees = [checkout(rev, work / "trees") for rev in (args.base, args.change)]
    report["revisions"] = [label for _, label in trees]
    count = int(SIDS_PER_S * (args.duration + WARMUP))
    peer_schema = (peer_dir / "schema.sql").read_text()
    urls: list[str] = []
    # One connection on each database for the whole run: another run's start drops only the
    # bench databases nobody is on (stack.drop_stale_databases).
    keepers: list[asyncpg.Connection] = []
    procs = []

    async def database() -> str:
        urls.append(await stack.fresh_database(server_url))
        keepers.append(await asyncpg.connect(urls[-1]))
        return urls[-1]

    try:
        # Each round's SIDs, and one more set for a first load of each server that is not
        # counted: its connections, caches and plans made, and for inbound SMS its contacts.
        fixtures = []
        for i, (tree, label) in enumerate(trees):
            stack.say(f"{label}: migrating and seeding {args.rounds} rounds of {count:,} SIDs")
            url = await database()
            fx = await prepare(tree, url, keepers[-1], peer_schema, count, args.rounds + 1, work / f"v{i}")
            fixtures.append(fx.rounds)
        url = await database()
        peer_sids = await prepare_reference(keepers[-1], peer_schema, count, args.rounds + 1, work / "reference")
        peer, peer_base = await stack.start_peer(peer_dir, url)
        procs.append(peer)
        servers = [(peer.pid, peer_base)]
        for i, (tree, _) in enumerate(trees):
            proc, base = await stack.start_commpro(stack.commpro_env(urls[i], unused_port(), work / f"data{i}"),
                                                   cwd=tree)
            procs.append(proc)
            servers.append((proc.pid, base))
        meter = rounds.Meter(rounds.Timing(args.duration, WARMUP, 32), await rounds.postmaster(url), keepers[-1])
        stack.say("a first load of each server, not counted")
        await meter.run(peer.pid, *load_of("status", peer_dir, peer_sids[args.rounds], peer_base))
        for i in (0, 1):
            await meter.run(servers[i + 1][0], *load_of(args.kind, peer_dir, fixtures[i][args.rounds],
                                                        servers[i + 1][1]))
        # Then statistics for what it made. Foreign keys' checks are planned once per connection:
        # a check on `contacts` planned while the table had a row or two stays a sequential scan
        # (in an A/A run of inbound SMS, one scan of every contact per message, the first
        # server's rate 0.5× the second's) until an analyze of the table, which autovacuum does
        # when it comes round to that database. Analysed now, both are replanned alike.
        for keeper in keepers[:2]:
            await seed.settle(keeper)
        samples: dict[str, list[dict]] = {"reference": [], "base": [], "change": []}
        for n in range(args.rounds):
            samples["reference"].append(await meter.run(peer.pid, *load_of("status", peer_dir, peer_sids[n],
                                                                           peer_base)))
            for i in ((0, 1) if first_in_round(n) == 0 else (1, 0)):
                pid, base = servers[i + 1]
                samples[("base", "change")[i]].append(await meter.run(pid, *load_of(args.kind, peer_dir,
                                                                                    fixtures[i][n], base)))
            b, c, r = samples["base"][-1], samples["change"][-1], samples["reference"][-1]
            stack.say(f"round {n + 1} of {args.rounds}: reference {r['rps']:,.0f}, base {b['rps']:,.0f}, change "
                f"{c['rps']:,.0f} ({c['rps'] / max(b['rps'], 1):.2f}×), change first: {first_in_round(n) == 1}")
            report["rows"] = [rounds.summary(name, samples[name], None if name == "reference" else samples["reference"])
                              for name in samples]
            report["change_over_base"] = compare(samples["base"], samples["change"])
            stack.save(RESULTS, report)
    finally:
        for proc in procs:
            stack.stop(proc)
        for keeper in keepers:
            await keeper.close()
        for url in urls:
            await stack.drop_database(server_url, url)
        shutil.rmtree(work, ignore_errors=True)


def table(report: dict) -> str:
    labels = {"reference": "reference stack, status callbacks", "base": f"base {report['revisions'][0]}",
              "change": f"change {report['revisions'][1]}"}
    out = [(f"A/B of {report['kind']}, {report['rounds']} rounds of {report['duration']} s, {report['when']} "
            f"on {report['machine']}."), "",
           ("| | rounds | rps | p50 ms | p99 ms | × reference (min–max) | CPU µs/req server / PostgreSQL / load "
            "| WAL bytes/req | CPU stolen % |"),
           "|---|---|---|---|---|---|---|---|---|"]
    for row in report.get("rows", []):
        versus = ("1.00" if row["vs_reference"] is None
                  else f"{row['vs_reference']:.2f} ({row['vs_reference_min']:.2f}–{row['vs_reference_max']:.2f})")
        cpu = " / ".join("n/a" if row["cpu_us"][p] is None else f"{row['cpu_us'][p]:,.0f}" for p in rounds.CPU_PARTS)
        wal = "n/a" if row["wal_bytes"] is None else f"{row['wal_bytes']:,.0f}"
        stolen = "n/a" if row.get("stolen_pct") is None else f"{row['stolen_pct']:.1f}"
        out.append(f"| {labels[row['scenario']]} | {row['rounds']} | {row['rps']:,.0f} | {row['p50_ms']:.1f} "
                   f"| {row['p99_ms']:.1f} | {versus} | {cpu} | {wal} | {stolen} |")
    failed = {labels[r["scenario"]]: {k: n for k, n in r["codes"].items() if not k.startswith("2")}
              for r in report.get("rows", [])}
    failed = {name: codes for name, codes in failed.items() if codes}
    if failed:  # the loads count every answer: an error answered fast would look like speed
        out += ["", f"Answers other than 2xx: {failed}."]
    c = report.get("change_over_base")
    if c and c["pairs"]:
        out += ["", (f"Change over base, by pairs of rounds (one with each first): median {c['median']:.2f}× "
                     f"({c['min']:.2f}–{c['max']:.2f}), faster in {c['faster']} of {len(c['pairs'])} pairs, slower in "
                     f"{c['slower']}: " + ", ".join(f"{p:.2f}" for p in c["pairs"]) + ". Round by round, base first "
                     "in odd rounds: " + ", ".join("n/a" if r is None else f"{r:.2f}" for r in c["ratios"]) + ".")]
    return "\n".join(out)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the git revision to compare against")
    parser.add_argument("change", nargs="?", default=WORKING_TREE, help="a git revision, or . (the working tree)")
    parser.add_argument("--kind", choices=KINDS, default="status")
    parser.add_argument("--rounds", type=int, default=8, help="rounded up to an even number (pairs of rounds)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load, after 1 s of warm-up")
    args = parser.parse_args(argv)
    args.rounds = max(2, args.rounds + args.rounds % 2)
    return args


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    result: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": stack.machine(),
                    "kind": options.kind,
                    "rounds": options.rounds, "duration": options.duration, "revisions": [options.base, options.change]}
    try:
        asyncio.run(main(options, result))
    finally:
        stack.save(RESULTS, result)
        print(table(result))
        print(f"\n(JSON: {RESULTS})", file=sys.stderr)
