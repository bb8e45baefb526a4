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
import threading
import time
from pathlib import Path
from typing import Self

import asyncpg

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


class FsyncProbe:
    """`with FsyncProbe(directory) as probe:` times an 8 KiB write's fdatasync every
    `interval_s` in a file of its own there, until the block ends; `summary()` after."""

    def __init__(self, directory: Path, interval_s: float = 0.05) -> None:
        self.path = directory / f"bench-fsync-probe-{os.getpid()}"
        self.interval_s = interval_s
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._sampled = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, samples: int, timeout: float) -> bool:
        """Whether `samples` latencies were taken within `timeout` seconds."""
        with self._sampled:
            return self._sampled.wait_for(lambda: len(self.latencies_ms) >= samples, timeout)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not self._stop.is_set():
                os.pwrite(fd, BLOCK, 0)
                started = time.perf_counter()
                os.fdatasync(fd)
                with self._sampled:
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                    self._sampled.notify_all()
                self._stop.wait(self.interval_s)
        finally:
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def summary(self) -> dict:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return {"samples": 0}

        def at(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {"samples": len(ordered), "interval_ms": round(self.interval_s * 1000), "p50_ms": at(0.5),
                "p99_ms": at(0.99), "max_ms": round(ordered[-1], 2),
                "over_10ms": sum(1 for v in ordered if v > SLOW_MS)}
