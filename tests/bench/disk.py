"""The disk's commit latency beside S3, measured in the same run.

S3 answers each inbound call after its own commit, and one user's commits queue behind each
other (the user's event counter stays locked until the commit): one fdatasync that takes 150 ms
holds up the 30 calls that arrive meanwhile, and that is the p99 of a 2,000-call round. Whether
S3's tail is the code's or the disk's is then a question of the disk's fdatasync tail, so a
thread writes 8 KiB and fdatasyncs it every 50 ms (a tenth of S3's own commit rate) in a file
beside PostgreSQL's data, and the report prints those latencies with S3's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncpg

from tests.bench import rounds
from tests.bench.probe import Probe

BLOCK = b"\0" * 8192
SLOW_MS = 10.0


async def data_directory(database_url: str, fallback: Path) -> Path:
    """PostgreSQL's data directory when it is on this machine and ours to write in (the embedded
    server's), else `fallback`."""
    conn = await asyncpg.connect(database_url)
    try:
        directory = Path(await conn.fetchval("SHOW data_directory"))
    except asyncpg.PostgresError:  # not a superuser, nor in pg_read_all_settings
        return fallback
    finally:
        await conn.close()
    return directory if directory.is_dir() and os.access(directory, os.W_OK) else fallback


class FsyncProbe(Probe):
    """`with FsyncProbe(directory) as probe:` times an 8 KiB write's fdatasync every
    `interval_s` in a file of its own there, until the block ends; `summary()` after."""

    name = "fsync-probe"

    def __init__(self, directory: Path, interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        self.path = directory / f"bench-fsync-probe-{os.getpid()}"
        self._fd = -1

    @property
    def latencies_ms(self) -> list[float]:
        return self.samples

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)

    def _sample(self) -> float:
        os.pwrite(self._fd, BLOCK, 0)
        started = time.perf_counter()
        os.fdatasync(self._fd)
        return (time.perf_counter() - started) * 1000

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self.path.unlink(missing_ok=True)

    def summary(self) -> dict:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return {"samples": 0}
        return {"samples": len(ordered), "interval_ms": round(self.interval_s * 1000),
                "p50_ms": rounds.percentile(ordered, 0.5), "p99_ms": rounds.percentile(ordered, 0.99),
                "max_ms": round(ordered[-1], 2),
                "over_10ms": sum(1 for v in ordered if v > SLOW_MS)}
