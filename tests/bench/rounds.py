"""Rounds of load, each with the CPU it cost, and their medians.

One 10-second sample on this 2-core machine moves by a fifth from one run to the next, with
whatever else the machine does. So each scenario runs several times, the reference's rounds
alternating with CommPro's (a burst of other work then hits both sides rather than one), and the
report keeps the median of each figure and, against the reference, the median and the spread of
the ratios measured in the same round.

CPU per request says where the time went: the server, PostgreSQL and the load generator share
the machine's two cores, so a server that needs less CPU per request leaves more to the others.

The share of the machine's CPU time the hypervisor gave to others (steal, /proc/stat) is
measured over each load as well. On this virtual machine, sampled every 3 s, it was under 1 % at
rest and 35-46 % through S1's loads in one run, which served 940-1,010 callbacks a second where
the same server had served 1,970-2,060 a few minutes before: a round with much stolen measured
the neighbours as much as the code.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from tests.bench import stack

CPU_PARTS = ("server", "postgres", "load")
WAL_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8"


def tree_seconds(root: psutil.Process) -> float:
    """CPU seconds of `root` and its descendants, living or dead.

    A child that exits is counted in its parent's children_* times once reaped (PostgreSQL's
    backends and autovacuum workers come and go), so the difference of two of these sums is the
    tree's CPU in between, whoever exited meanwhile.
    """
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_ticks(stat: str | None = None) -> tuple[int, int] | None:
    """(stolen, all) clock ticks of the machine's CPUs so far, from the first line of /proc/stat
    (`stat`, else the file's): user nice system idle iowait irq softirq steal; guest time is
    already inside user and nice. None where there is no such file (not Linux)."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    fields = stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(value) for value in fields[1:9]]
    return ticks[7], sum(ticks)


def stolen_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The percentage of the CPU time between two cpu_ticks() that the hypervisor gave elsewhere."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def children_seconds() -> float:
    # The load generator is this process's child, reaped when stack.load returns.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def postmaster(database_url: str) -> psutil.Process | None:
    """The PostgreSQL server's main process, if it runs on this machine (else its CPU is not
    counted): the parent of one of its backends."""
    conn = await asyncpg.connect(database_url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        try:
            proc = psutil.Process(backend)
            # Another machine's (or container's) backend pid may name an unrelated local process.
            if "postgres" not in " ".join(proc.cmdline()) and "postgres" not in proc.name():
                return None
            return proc.parent()
        except psutil.Error:
            return None
    finally:
        await conn.close()


@dataclass(frozen=True)
class Timing:
    duration: float
    warmup: float
    conns: int


@dataclass(frozen=True)
class Meter:
    """Runs one load and measures the CPU of the server it targets, of PostgreSQL and of itself."""

    timing: Timing
    postgres: psutil.Process | None
    # A connection to read the WAL's position through: the bytes of WAL per request, a steadier
    # figure than the rate where a change writes less (the server's whole WAL, as its CPU).
    wal: asyncpg.Connection | None = None

    async def run(self, server: int, script: Path, base: str, kind: str, extra: tuple[str, ...] = ()) -> dict:
        proc = psutil.Process(server)
        wal_before = await self._wal()
        before = (tree_seconds(proc), self._pg(), children_seconds())
        ticks = cpu_ticks()
        result = await stack.load(script, base, kind, duration=self.timing.duration, warmup=self.timing.warmup,
                                  conns=self.timing.conns, extra=extra)
        after = (tree_seconds(proc), self._pg(), children_seconds())
        result["stolen_pct"] = stolen_pct(ticks, cpu_ticks())
        wal_after = await self._wal()
        # The load counts the requests of its timed part only; the CPU runs through its warm-up
        # too, at about the same rate.
        requests = max(result["requests"] * (self.timing.warmup + self.timing.duration) / self.timing.duration, 1)
        result["cpu_us"] = {part: None if a is None else round((a - b) / requests * 1e6, 1)
                            for part, b, a in zip(CPU_PARTS, before, after, strict=True)}
        result["wal_bytes"] = None if wal_before is None else round((wal_after - wal_before) / requests)
        return result

    async def _wal(self) -> float | None:
        return None if self.wal is None else await self.wal.fetchval(WAL_POSITION)

    async def idle(self, server: int, seconds: float) -> dict[str, float | None]:
        """CPU milliseconds per second of the server and of PostgreSQL with no load (timers,
        background loops): at S3's fixed 200/s this weighs on each request's share."""
        proc = psutil.Process(server)
        before = (tree_seconds(proc), self._pg())
        await asyncio.sleep(seconds)
        after = (tree_seconds(proc), self._pg())
        return {part: None if a is None else round((a - b) / seconds * 1000, 1)
                for part, b, a in zip(CPU_PARTS, before, after, strict=False)}

    def _pg(self) -> float | None:
        return None if self.postgres is None else tree_seconds(self.postgres)


def percentile(ordered: list[float], q: float) -> float | None:
    """The value at `q` (0 to 1) of a sorted list, as the load generators take it; None if empty."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def summary(scenario: str, samples: list[dict], reference: list[dict] | None) -> dict:
    """The medians over rounds of one scenario; with `reference` (the same rounds' reference
    samples), the ratio of each round's rps to that round's reference rps: median, min, max."""
    row = {"scenario": scenario, "rounds": len(samples),
           **{key: median([s[key] for s in samples]) for key in ("rps", "p50_ms", "p99_ms")},
           "cpu_us": {part: median([s["cpu_us"][part] for s in samples]) for part in CPU_PARTS},
           "wal_bytes": median([s.get("wal_bytes") for s in samples]),
           "stolen_pct": median([s.get("stolen_pct") for s in samples])}
    if reference is not None:
        ratios = [s["rps"] / r["rps"] for s, r in zip(samples, reference, strict=False) if r["rps"]]
        row |= {"vs_reference": median(ratios), "vs_reference_min": round(min(ratios), 2) if ratios else None,
                "vs_reference_max": round(max(ratios), 2) if ratios else None}
    else:
        row |= {"vs_reference": None, "vs_reference_min": None, "vs_reference_max": None}
    codes: dict[str, int] = {}
    for s in samples:
        for code, n in s["codes"].items():
            codes[code] = codes.get(code, 0) + n
    row["codes"] = codes
    row["samples"] = samples
    return row
