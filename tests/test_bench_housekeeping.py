"""`make bench`'s housekeeping on its PostgreSQL server: what killed runs leave is dropped at the
next start, and a database some run is still connected to is not; the disk probe beside S3; the
reference loads' SIDs split between them."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from tests.bench import disk, seed, stack
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
