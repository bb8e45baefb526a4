"""One durable job mechanism for all background work, on PostgreSQL (the `jobs` table).

A job is a (kind, key) row: enqueued in the transaction of the change that makes it due, so it
is never lost, and at most once per kind and key, so enqueueing again changes nothing. Every
process runs one loop per kind that claims due jobs (FOR UPDATE SKIP LOCKED) under a lease in
database time, renews the lease while the jobs run, and records each outcome only while it
still holds the claim. So a slow job is never run twice by two replicas, and the jobs of a
process that died are taken over once their lease lapses; a process that shuts down hands its
running jobs back at once.

A kind's function does the work of one job, `run(app, job)`, and ends in one of four ways:

- it returns None: done (a recurring kind is due again `every_s` later);
- it returns Later(at): due again at `at` (a next phase, not a failure: attempts start over);
- it raises Retry(reason) (or any exception): due again after the kind's backoff, with jitter;
  past the kind's `max_attempts` or `give_up_after_s` it is given up instead;
- it raises GiveUp(reason): given up at once.

Giving up logs `job_gave_up` with the reason and runs the kind's `gave_up(conn, job, reason)`
hook in the same transaction, so the domain row shows it (a price "gave_up", a media "failed").

Adding a kind: write its function and a `(config) -> Kind` factory beside the domain it serves,
then add that factory to JOB_KINDS in commpro/app.py. For example, a one-off kind:

    async def fetch_thing(app: web.Application, job: Job) -> None:
        ...  # raise Retry("why") to try again later, GiveUp("why") to stop

    def thing_fetch(config: Config) -> Kind:
        return Kind("thing-fetch", fetch_thing, Backoff(first_s=5, max_attempts=8), poll_s=10)

enqueued with `await jobs.enqueue(conn, "thing-fetch", str(thing_id))` in the transaction that
creates the thing (and `app[jobs_key].wake("thing-fetch")` after its commit, to start at once).
A recurring purge is one line over a store function `delete(conn, before) -> int`:

    def things_retention(config: Config) -> Kind:
        return retention_kind("things-retention", store.delete_things_before, config.things.keep_s, 3600)

Tests drive a kind without waiting: `await run_due(app, "thing-fetch", now=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import jobs_key, metrics_key, pool_key, tasks_key
from commpro.dbhealth import is_outage
from commpro.jobs import store

log = structlog.get_logger("commpro.jobs")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    # Runs started, this one included.
    attempts: int
    created_at: datetime
    # The round's time: what the job compares its own schedule with (tests move it forward).
    now: datetime


@dataclass(frozen=True)
class Later:
    """Due again at `at`: a next phase of the work, not a failure."""

    at: datetime


class Retry(Exception):
    """Failed this time; worth trying again after the kind's backoff."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GiveUp(Exception):
    """Failed in a way no retry will change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Backoff:
    """The delay after the n-th failed attempt: first_s doubling each time up to max_s, each
    delay shortened at random by up to `jitter` (a fraction) so that retries spread out. Give up
    after `max_attempts` runs (0: no limit) or once the next attempt would fall more than
    `give_up_after_s` after the job was enqueued (None: no limit)."""

    first_s: float = 5.0
    max_s: float = 900.0
    jitter: float = 0.2
    max_attempts: int = 0
    give_up_after_s: float | None = None

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.first_s * 2 ** max(attempts - 1, 0), self.max_s)
        return base * (1 - self.jitter * rand())


Run = Callable[[web.Application, Job], Awaitable[Later | None]]
GaveUp = Callable[[asyncpg.Connection, Job, str], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    """A kind of job: its function and how it is scheduled. `poll_s`: how often each process
    looks for due jobs (wake(kind) looks at once); `every_s`: a recurring kind, one row that is
    due again that long after each run; `lease_s`: how long a claim holds between renewals."""

    name: str
    run: Run
    backoff: Backoff = Backoff()
    poll_s: float = 10.0
    every_s: float | None = None
    batch: int = 20
    concurrency: int = 1
    lease_s: float = 60.0
    gave_up: GaveUp | None = None


class JobQueue:
    """The kinds this process runs, and how to wake their loops. Kept under jobs_key."""

    def __init__(self) -> None:
        self.kinds: dict[str, Kind] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # Notified after each round of a kind's loop, for whoever waits on its work.
        self.rounds: dict[str, asyncio.Condition] = {}
        self._busy: set[str] = set()
        self._rounds_done: dict[str, int] = {}

    def register(self, kind: Kind) -> None:
        self.kinds[kind.name] = kind
        self._wake[kind.name] = asyncio.Event()
        self.rounds[kind.name] = asyncio.Condition()
        self._rounds_done[kind.name] = 0

    def wake(self, kind: str) -> None:
        """Look for due jobs of `kind` now; call after the commit that enqueued them."""
        self._wake[kind].set()

    async def between_rounds(self, kind: str) -> None:
        """Wait until this process's loop of `kind` has done its first round and is not in the
        middle of another (tests)."""
        async with self.rounds[kind]:
            await self.rounds[kind].wait_for(lambda: kind not in self._busy and self._rounds_done[kind] > 0)


async def enqueue(conn: asyncpg.Connection, kind: str, key: str, *, payload: dict[str, Any] | None = None,
                  run_at: datetime | None = None, after_s: float = 0) -> bool:
    """Enqueue in the caller's transaction; due at `run_at`, else `after_s` from now. True when
    the job is new: the same (kind, key) again is a no-op, whatever state that job is in."""
    return await store.enqueue(conn, kind, key, payload or {}, run_at, after_s)


async def run_due(app: web.Application, kind: str, now: datetime | None = None, max_rounds: int = 100) -> int:
    """Run every job of `kind` due at `now`, batch after batch; return how many ran to the end
    (done or Later). `now` lets tests move time forward instead of waiting."""
    now, ran = now or datetime.now(UTC), 0
    for _ in range(max_rounds):
        claimed, done = await _round(app, app[jobs_key].kinds[kind], now)
        ran += done
        if claimed < app[jobs_key].kinds[kind].batch:
            break
    return ran


async def _round(app: web.Application, kind: Kind, now: datetime) -> tuple[int, int]:
    pool = app[pool_key]
    token = uuid.uuid4()
    async with pool.acquire() as conn:
        rows = await store.claim(conn, kind.name, now, kind.batch, token, kind.lease_s)
    if not rows:
        return 0, 0
    unsettled = {row["id"] for row in rows}
    renewal = asyncio.create_task(_renew(pool, kind, token, unsettled), name=f"{kind.name}-lease")
    limit = asyncio.Semaphore(kind.concurrency)

    async def one(row: asyncpg.Record) -> bool:
        job = Job(row["id"], row["kind"], row["key"], row["payload"], row["attempts"], row["created_at"], now)
        async with limit:
            ran = await _run_one(app, kind, job, token)
        unsettled.discard(job.id)
        return ran

    try:
        # Every job ends before the round does, even when one's outcome could not be written
        # (the database away): that one stays unsettled and is handed back below.
        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        for error in (r for r in results if isinstance(r, BaseException)):
            log.error("job_outcome_not_recorded", kind=kind.name, error=type(error).__name__)
        ran = sum(r for r in results if r is True)
    finally:
        renewal.cancel()
        # wait(), not `await renewal`: a cancellation of this round must not be swallowed here.
        await asyncio.wait([renewal])
        if unsettled:  # cancelled (shutdown), or an outcome not written: hand those back at once
            async with pool.acquire() as conn:
                await store.release(conn, token, list(unsettled))
            log.info("jobs_released", kind=kind.name, count=len(unsettled))
    return len(rows), ran


async def _renew(pool: asyncpg.Pool, kind: Kind, token: uuid.UUID, unsettled: set[int]) -> None:
    """Keep the claim while the jobs run: renewed three times per lease, so one slow renewal
    does not lose it."""
    while unsettled:
        await asyncio.sleep(kind.lease_s / 3)
        try:
            async with pool.acquire() as conn:
                await store.renew(conn, token, list(unsettled), kind.lease_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            log.warning("job_lease_renewal_failed", kind=kind.name)


async def _run_one(app: web.Application, kind: Kind, job: Job, token: uuid.UUID) -> bool:
    metrics = app[metrics_key]
    try:
        outcome = await kind.run(app, job)
    except GiveUp as exc:
        await _give_up(app, kind, job, token, exc.reason)
        metrics.job_failures.labels(kind.name).inc()
        return False
    except Retry as exc:
        reason = exc.reason
    except Exception as exc:  # a bug or an unexpected answer: retried like any failure, and logged
        if is_outage(exc):
            # The database went away under the job: retried like any failure, and the outage
            # itself is logged once by the health tracker, so no traceback here.
            log.warning("job_interrupted", kind=kind.name, key=job.key, reason="database_unavailable")
        else:
            log.exception("job_crashed", kind=kind.name, key=job.key)
        reason = type(exc).__name__
    else:
        if isinstance(outcome, Later):
            at: datetime | None = outcome.at
        else:
            at = job.now + timedelta(seconds=kind.every_s) if kind.every_s is not None else None
        async with app[pool_key].acquire() as conn:
            if at is None:
                kept = await store.finish(conn, job.id, token, "done", None)
            else:
                kept = await store.reschedule(conn, job.id, token, at, 0, None)
        _count(app, kind, job, "done" if at is None else "later", kept)
        return True
    delay = kind.backoff.delay(job.attempts)
    if kind.every_s is not None:  # a recurring kind never gives up; it is due again soon enough
        delay = min(delay, kind.every_s)
    next_at = job.now + timedelta(seconds=delay)
    limit = kind.backoff.give_up_after_s
    if kind.every_s is None and kind.backoff.max_attempts and job.attempts >= kind.backoff.max_attempts:
        await _give_up(app, kind, job, token, f"{reason} ({job.attempts} attempts)")
    elif kind.every_s is None and limit is not None and next_at > job.created_at + timedelta(seconds=limit):
        await _give_up(app, kind, job, token, f"{reason} (no success within {limit:g} s)")
    else:
        async with app[pool_key].acquire() as conn:
            kept = await store.reschedule(conn, job.id, token, next_at, job.attempts, reason)
        log.info("job_retry", kind=kind.name, key=job.key, attempts=job.attempts, reason=reason,
                 delay_s=round(delay, 3))
        _count(app, kind, job, "retry", kept)
    metrics.job_failures.labels(kind.name).inc()
    return False


async def _give_up(app: web.Application, kind: Kind, job: Job, token: uuid.UUID, reason: str) -> None:
    async with app[pool_key].acquire() as conn, conn.transaction():
        kept = await store.finish(conn, job.id, token, "failed", reason)
        if kept and kind.gave_up is not None:
            await kind.gave_up(conn, job, reason)
    log.warning("job_gave_up", kind=kind.name, key=job.key, attempts=job.attempts, reason=reason)
    _count(app, kind, job, "gave_up", kept)


def _count(app: web.Application, kind: Kind, job: Job, outcome: str, kept: bool) -> None:
    if not kept:  # our lease lapsed and another worker claimed the job: its outcome stands
        log.warning("job_lease_lost", kind=kind.name, key=job.key)
        outcome = "lease_lost"
    app[metrics_key].job_runs.labels(kind.name, outcome).inc()


async def _loop(app: web.Application, kind: Kind) -> None:
    queue = app[jobs_key]
    wake, rounds = queue._wake[kind.name], queue.rounds[kind.name]
    while True:
        wake.clear()
        more = False
        queue._busy.add(kind.name)
        try:
            claimed, _ = await _round(app, kind, datetime.now(UTC))
            more = claimed == kind.batch  # a full batch: more may be due already
        except Exception as exc:  # the loop survives a failed round (the database away, say)
            if is_outage(exc):
                # The outage itself is logged once by the health tracker: no traceback here.
                log.warning("background_iteration_skipped", task=kind.name, reason="database_unavailable")
            else:
                log.exception("background_iteration_failed", task=kind.name)
        else:
            app[metrics_key].job_succeeded(kind.name)
        queue._busy.discard(kind.name)
        queue._rounds_done[kind.name] += 1
        async with rounds:
            rounds.notify_all()
        if not more:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), kind.poll_s)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The loop of every registered kind, from start-up to shutdown; after the pool and the
    Twilio client in cleanup order, so both outlive the loops."""
    queue = app[jobs_key]
    async with app[pool_key].acquire() as conn:
        for kind in queue.kinds.values():
            if kind.every_s is not None:
                await store.ensure_recurring(conn, kind.name)
    tasks = {name: asyncio.create_task(_loop(app, kind), name=name) for name, kind in queue.kinds.items()}
    app[tasks_key].update(tasks)
    try:
        yield
    finally:
        for task in tasks.values():
            task.cancel()
        for name, task in tasks.items():
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("background_stopped", task=name)


def retention_kind(name: str, delete: Callable[[asyncpg.Connection, datetime], Awaitable[int]], keep_s: float,
              every_s: float) -> Kind:
    """A recurring kind that deletes, every `every_s`, what `delete(conn, before)` finds older
    than `keep_s`; `delete` returns how many rows went."""

    async def purge(app: web.Application, job: Job) -> None:
        async with app[pool_key].acquire() as conn:
            deleted = await delete(conn, job.now - timedelta(seconds=keep_s))
        if deleted:
            log.info("retention_purged", kind=name, deleted=deleted)

    return Kind(name, purge, poll_s=min(every_s, 60), every_s=every_s)


async def job_stats(app: web.Application, now: datetime | None = None) -> dict[str, dict[str, float]]:
    """Per kind: jobs due and not running, running, given up (kept until purged), and the lag
    (seconds since the oldest due job became due). Sets the metrics' gauges as it goes."""
    async with app[pool_key].acquire() as conn:
        rows = await store.stats(conn, now or datetime.now(UTC))
    figures = {name: {"due": 0, "running": 0, "failed": 0, "lagSec": 0.0} for name in app[jobs_key].kinds}
    for row in rows:
        entry = figures.setdefault(row["kind"], {"due": 0, "running": 0, "failed": 0, "lagSec": 0.0})
        entry["due"] += row["due"]
        entry["running"] += row["running"]
        entry["failed"] += row["failed"]
        entry["lagSec"] = max(entry["lagSec"], round(row["lag_s"], 3))
    app[metrics_key].observe_jobs(figures)
    return figures
