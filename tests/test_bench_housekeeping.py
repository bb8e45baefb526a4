"""`make bench`'s housekeeping on its PostgreSQL server: what killed runs leave is dropped at the
next start, and a database some run is still connected to is not; the disk probe beside S3; the
reference loads' SIDs split between them; the CPU stolen by the hypervisor, per round and per S3
request. `make ab`'s parts that are not timings: a revision's
files, the reference's own database, the pairs' order and their ratios."""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest

from tests.bench import ab, disk, rounds, seed, stack, steal
from tests.conftest import create_database


async def _names(server_url: str) -> set[str]:
    conn = await asyncpg.connect(server_url)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def test_stale_bench_databases_are_dropped_and_one_in_use_is_kept(pg_server_url):
    left = await create_database(pg_server_url, prefix=stack.BENCH_PREFIX)
    in_use = await create_database(pg_server_url, prefix=stack.BENCH_PREFIX)
    other = await create_database(pg_server_url, prefix="commproXbenchX")  # `_` is literal, not LIKE's any
    running = await asyncpg.connect(in_use)
    try:
        dropped = await stack.drop_stale_databases(pg_server_url)
        names = await _names(pg_server_url)
    finally:
        await running.close()
        for url in (left, in_use, other):
            await stack.drop_database(pg_server_url, url)
    name = stack.database_name
    assert name(left) in dropped and name(left) not in names
    assert name(in_use) in names and name(in_use) not in dropped
    assert name(other) in names


async def test_a_bench_database_is_dropped_by_its_url(pg_server_url):
    """The embedded server's URLs carry a socket directory in their query: the name is the path."""
    assert stack.database_name("postgresql://postgres:@/commpro_bench_x?host=/a/b/pgdata") == "commpro_bench_x"
    url = await create_database(pg_server_url, prefix=stack.BENCH_PREFIX)
    await stack.drop_database(pg_server_url, url)
    assert stack.database_name(url) not in await _names(pg_server_url)


async def test_the_disk_probe_times_fdatasyncs_beside_the_data_and_leaves_no_file(pg_server_url, tmp_path):
    """S3's report carries the disk's fdatasync tail (tests/bench/disk.py): the embedded server's
    data directory is found, the probe samples until its block ends, and removes its file."""
    directory = await disk.data_directory(pg_server_url, tmp_path)
    if "DATABASE_URL" in os.environ:  # a server elsewhere: its directory, if this machine has it
        assert directory == tmp_path or (directory / "PG_VERSION").is_file()
    else:  # the embedded server this run started
        assert (directory / "PG_VERSION").is_file()
    with disk.FsyncProbe(tmp_path, interval_s=0.001) as probe:
        assert await asyncio.to_thread(probe.wait_for, 5, 30)
    summary = probe.summary()
    assert summary["samples"] >= 5 and 0 <= summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    assert summary["over_10ms"] == sum(1 for v in probe.latencies_ms if v > disk.SLOW_MS)
    assert list(tmp_path.iterdir()) == []


def test_sids_split_into_consecutive_slices_none_shared(tmp_path):
    sids = [f"CA{n:032x}" for n in range(10)]
    path = tmp_path / "round0-calls.txt"
    path.write_text("\n".join(sids) + "\n")
    parts = [p.read_text().split() for p in seed.split_sids(path, 3)]
    assert parts == [sids[0:4], sids[4:8], sids[8:10]]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(stack.REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_ab_runs_a_revision_from_its_own_files_and_the_working_tree_from_the_repository(tmp_path):
    first = _git("rev-list", "--max-parents=0", "HEAD").split()[0]
    tree, label = ab.checkout(first, tmp_path)
    assert label == _git("rev-parse", "--short", first)
    assert tree.parent == tmp_path and tree != stack.REPO
    # That commit's files, not today's: its migrations, its code.
    assert sorted(p.name for p in (tree / "sql").glob("*.sql")) == sorted(
        _git("ls-tree", "--name-only", f"{first}:sql").split())
    assert (tree / "commpro" / "__init__.py").read_text() == _git("show", f"{first}:commpro/__init__.py") + "\n"
    (tree / "marker").touch()
    assert ab.checkout(first, tmp_path) == (tree, label) and (tree / "marker").exists()  # unpacked once
    assert [p.name for p in tmp_path.iterdir()] == [tree.name]  # nothing partial left beside
    here, label = ab.checkout(ab.WORKING_TREE, tmp_path)
    assert here == stack.REPO and label.startswith(_git("rev-parse", "--short", "HEAD"))
    with pytest.raises(SystemExit, match="no-such-revision"):
        ab.checkout("no-such-revision", tmp_path)


async def test_a_revision_is_migrated_by_its_own_code(pg_server_url, tmp_path):
    """The revision before sql/0016 was added: its database holds its 15 migrations, not 16."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--", "sql/0016_notify_only_listened.sql")
    tree, _ = ab.checkout(f"{added}~1", tmp_path / "trees")
    url = await stack.fresh_database(pg_server_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            fixtures = await ab.prepare(tree, url, conn, (stack.PEER_SOURCE / "schema.sql").read_text(), 10, 2,
                                        tmp_path / "v")
            applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")]
            calls = await conn.fetchval("SELECT count(*) FROM calls")
        finally:
            await conn.close()
    finally:
        await stack.drop_database(pg_server_url, url)
    assert applied == sorted(p.name for p in (tree / "sql").glob("*.sql")) and len(applied) == 15
    assert [len(r.calls.read_text().split()) for r in fixtures.rounds] == [10, 10]
    assert calls == 2 * 10 + 10 + 1  # the rounds', the SQL ceiling's, the memory phase's one (seed.py)
async def test_the_reference_gets_a_database_of_its_own_with_fresh_sids_each_round(pg_server_url, tmp_path):
    """Its loads' dead rows and autovacuum's work on them land on neither revision's database."""
    peer_schema = (stack.PEER_SOURCE / "schema.sql").read_text()
    url = await stack.fresh_database(pg_server_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            files = await ab.prepare_reference(conn, peer_schema, 50, 3, tmp_path)
            tables = {r["relname"] for r in await conn.fetch(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public'")}
            stored = {r["sid"]: r["status"] for r in await conn.fetch("SELECT sid, status FROM peer_calls")}
        finally:
            await conn.close()
    finally:
        await stack.drop_database(pg_server_url, url)
    assert tables == {"peer_calls"}
    rounds = [f.read_text().split() for f in files]
    assert [len(r) for r in rounds] == [50, 50, 50]
    every = [sid for r in rounds for sid in r]
    assert len(set(every)) == 150 and set(every) == set(stored) and set(stored.values()) == {"initiated"}


def test_ab_alternates_which_revision_goes_first_and_compares_pairs_of_rounds():
    assert [ab.first_in_round(n) for n in range(4)] == [0, 1, 0, 1]
    assert ab.parse(["main", "--rounds", "7"]).rounds == 8  # pairs of rounds: even
    base = [{"rps": 1000}, {"rps": 2000}, {"rps": 1000}, {"rps": 1000}]
    # Whoever goes first gains: 1.21 then 1 / 1.21 is no difference once paired.
    change = [{"rps": 1210}, {"rps": 2000 / 1.21}, {"rps": 1100}, {"rps": 1100}]
    c = ab.compare(base, change)
    assert c["ratios"] == [1.21, round(1 / 1.21, 3), 1.1, 1.1]
    assert c["pairs"] == [1.0, 1.1]
    assert (c["median"], c["min"], c["max"], c["faster"], c["slower"]) == (1.05, 1.0, 1.1, 1, 0)
    report = {"kind": "sms", "rounds": 4, "duration": 8.0, "when": "now", "machine": "here",
              "revisions": ["abc", "def + edits"], "change_over_base": c,
              "rows": [{"scenario": "change", "rounds": 4, "rps": 1, "p50_ms": 1, "p99_ms": 1, "vs_reference": None,
                        "cpu_us": {part: None for part in ("server", "postgres", "load")}, "wal_bytes": None,
                        "codes": {"200": 10, "503": 2}}]}
    text = ab.table(report)
    assert "median 1.05× (1.00–1.10), faster in 1 of 2 pairs, slower in 0: 1.00, 1.10." in text
    assert "Answers other than 2xx: {'change def + edits': {'503': 2}}." in text


def test_the_cpu_stolen_by_the_hypervisor_is_read_from_proc_stat_and_shown_per_round():
    stat = "cpu  100 5 20 800 10 0 3 40 7 0\ncpu0 50 2 10 400 5 0 1 20 3 0\n"
    # steal is the eighth number; guest (7) is inside user already, so not counted twice.
    assert rounds.cpu_ticks(stat) == (40, 978)
    assert rounds.cpu_ticks("intr 1 2 3\n") is None
    assert rounds.stolen_pct((40, 978), (70, 1178)) == 15.0  # 30 of 200 ticks
    assert rounds.stolen_pct(None, (70, 1178)) is None
    assert rounds.stolen_pct((40, 978), (40, 978)) is None
    here = rounds.cpu_ticks()  # this machine's: Linux
    assert here is not None and 0 <= here[0] <= here[1]
    samples = [{"rps": 10, "p50_ms": 1, "p99_ms": 2, "cpu_us": dict.fromkeys(rounds.CPU_PARTS, 1.0),
                "codes": {"204": 10}, "stolen_pct": pct} for pct in (2.0, 40.0, 5.0)]
    assert rounds.summary("S", samples, None)["stolen_pct"] == 5.0
    row = ab.table({"kind": "status", "rounds": 3, "duration": 8.0, "when": "now", "machine": "here",
                    "revisions": ["abc", "def"],
                    "rows": [rounds.summary("change", samples, None)]})
    assert row.splitlines()[-1].endswith("| 5.0 |")
    from tests.bench.__main__ import webhook_line
    line = webhook_line(rounds.summary("S1", samples, None) | {"sql_ceiling_tps": None, "of_ceiling": None})
    assert line.endswith("| 1 / 1 / 1 | 5.0 | n/a | n/a |")


def test_s3_requests_are_split_by_whether_cpu_was_stolen_while_each_was_in_flight():
    # Readings every 20 ms: 2 ticks stolen between 1040 and 1060, none elsewhere.
    readings = [(1000.0, 5, 100), (1020.0, 5, 104), (1040.0, 5, 108), (1060.0, 7, 112), (1080.0, 7, 116)]
    trace = [(1001.0, 3.0),    # within 1000-1020: none stolen
             (1021.0, 4.0),    # 1020-1040: none
             (1041.0, 30.0),   # 1040-1080: the steal
             (1035.0, 10.0),   # 1020-1060: spans it
             (990.0, 5.0),     # left before the first reading: left out
             (1079.0, 5.0)]    # answered after the last: left out
    split = steal.split(trace, readings)
    assert split["none"] == {"requests": 2, "p50_ms": 4.0, "p99_ms": 4.0}
    assert split["some"] == {"requests": 2, "p50_ms": 30.0, "p99_ms": 30.0}
    assert steal.split([], readings)["none"] == {"requests": 0, "p50_ms": None, "p99_ms": None}
    from tests.bench.__main__ import table
    text = table({"when": "now", "machine": "here", "webhooks": [], "lists": [], "memory": {}, "s3_by_steal": split})
    assert ("2 with none stolen, p50 4.0 ms, p99 4.0 ms; 2 with some, p50 30.0 ms, p99 30.0 ms." in text)


def test_the_steal_probe_reads_this_machines_cpu_ticks_until_its_block_ends():
    with steal.StealProbe(interval_s=0.01) as probe:
        assert probe.wait_for(3, timeout=10)
    taken = len(probe.readings)
    times = [r[0] for r in probe.readings]
    assert times == sorted(times) and all(0 <= stolen <= total for _, stolen, total in probe.readings)
    assert not probe._thread.is_alive() and len(probe.readings) == taken
