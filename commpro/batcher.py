"""Group commit for webhooks: concurrent requests of one kind are applied together, by one
statement in one transaction, and each is answered only once that transaction has committed.

Why: a webhook's own work is a few milliseconds of SQL, but each transaction costs round trips
(BEGIN, COMMIT) and a commit; and PostgreSQL serialises the commits of transactions that NOTIFY.
One transaction per batch pays those once for every request waiting at that moment.

How: `submit(item)` queues the item and waits. On the loop's next turn a batch task takes
everything queued (up to `max_items`), runs `apply(conn, items)` in one transaction, and hands
each request its result after the commit. While a batch runs, the next one gathers: under load
batches grow, alone a request waits for nothing but its own statement. Up to `in_flight`
batches (1 by default) run at once, each on a connection of its own, so that one batch's
statement may overlap another's commit; while one runs, another starts only once `overlap_at`
items wait (1 by default), so that batches stay large: a batch's fixed cost in PostgreSQL's CPU
outweighs the overlap of small ones (commpro/app.py).

A batch that committed starts the next one before it answers its own requests: the next
batch's task runs first, sending its statement (when the pool has an idle connection: the
committed batch gives its own back only after answering), and this process writes the answers
while PostgreSQL works. Answering first left PostgreSQL idle for a turn of the loop per batch, about
1.8 ms in every 6.5 ms under S1 of `make bench` (0.15 ms after).

Batches of several processes may run at once all the same, so `apply` takes its row locks in a
consistent order (the status functions: rows, then event counters, each sorted): they wait for
each other, never deadlock.

`one_statement`: `apply` runs a single statement, which PostgreSQL runs as a transaction of its
own, committed before asyncpg returns its rows: no BEGIN and COMMIT round trips.

A batch that fails (a deadlock, a bad item) is rolled back whole, and each of its items is then
run alone in a transaction of its own: one bad item never fails the others. When the database
is out of reach, every item of the batch fails at once instead.
An item that fails alone raises ItemFailed in its request, whose caller can then do the work its
own way (the webhooks run their item-at-a-time code, which answers as it always has).

On shutdown (the cleanup context), what is queued is still applied, and what comes after runs
alone: nothing is dropped, nothing waits forever.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import Meters, metrics_key, pool_key
from commpro.dbhealth import is_outage

log = structlog.get_logger("commpro.batcher")
Item = TypeVar("Item")
Result = TypeVar("Result")
# apply(conn, items) -> one result per item, in order; runs inside the batch's transaction (or is
# one statement). It must be idempotent: items of a failed batch run again, alone, and a commit
# whose answer was lost with its connection looks like a failure.
Apply = Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]


class ItemFailed(Exception):
    """The item failed even when run alone (its cause is chained)."""


class Batcher(Generic[Item, Result]):
    def __init__(self, name: str, pool: asyncpg.Pool, apply: Apply, *, max_items: int = 256,
                 one_statement: bool = False, in_flight: int = 1, overlap_at: int = 1,
                 metrics: Meters | None = None) -> None:
        self.name = name
        self._metrics = metrics
        self._pool = pool
        self._apply = apply
        self._max_items = max_items
        self._one_statement = one_statement
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = in_flight
        self._overlap_at = overlap_at
        self._slots_taken = 0
        self._running: set[asyncio.Task] = set()
        self._start_scheduled = False
        self._started = False
        self._closing = False

    def start(self) -> None:
        self._started = True

    async def submit(self, item: Item) -> Result:
        """Apply `item` with whatever else is waiting; its result once committed."""
        if self._closing or not self._started:
            return await self._alone(item)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queued.append((item, future))
        if not self._start_scheduled:
            # On the loop's next turn, not now: the requests this turn parses join the batch.
            self._start_scheduled = True
            loop.call_soon(self._start_batches)
        return await future

    async def submit_or(self, item: Item, failed: Result) -> Result:
        """submit(item), or `failed` when the item failed even alone: the status webhooks then
        run their one-at-a-time code, which answers as it always has."""
        try:
            return await self.submit(item)
        except ItemFailed:
            return failed

    async def close(self) -> None:
        """Apply what is queued, then stop; later items run alone."""
        self._closing = True
        self._start_batches()
        while self._running:  # a batch that ends starts the next of what is queued
            # wait(), not gather(): a close() that is cancelled leaves the batches to finish.
            await asyncio.wait(self._running)

    def _start_batches(self) -> None:
        """Start a batch of what is queued for each free slot; what queues meanwhile joins the next."""
        self._start_scheduled = False
        while self._queued and self._slots_taken < self._in_flight:
            if self._slots_taken and len(self._queued) < self._overlap_at:
                break  # what waits joins the batch after the running one, unless that many wait
            batch, self._queued = self._queued[:self._max_items], self._queued[self._max_items:]
            self._slots_taken += 1
            slot = _Slot(self)
            task = asyncio.create_task(self._flush_in_slot(batch, slot), name=f"batch:{self.name}")
            self._running.add(task)
            task.add_done_callback(functools.partial(self._batch_ended, batch, slot))

    def _batch_ended(self, batch: list[tuple[Item, asyncio.Future[Result]]], slot: _Slot,
                     task: asyncio.Task) -> None:
        # However the task ended (a bug, cancelled, even before its first step): no request of
        # its batch waits for ever, and its slot goes to the next batch. Normally both are done.
        self._running.discard(task)
        _fail(batch, f"{self.name}: batch ended unanswered")
        slot.free()

    async def _flush_in_slot(self, batch: list[tuple[Item, asyncio.Future[Result]]], slot: _Slot) -> None:
        try:
            await self._flush(batch, slot.free)
        except Exception:  # a bug: its requests are failed as the task ends (_batch_ended)
            log.exception("batch_crashed", batch=self.name, size=len(batch))

    async def _run(self, items: list[Item],
                   committed: Callable[[list[Result]], None] | None = None) -> list[Result]:
        async with self._pool.acquire() as conn:
            if self._one_statement:
                results = await self._apply(conn, items)
            else:
                async with conn.transaction():
                    results = await self._apply(conn, items)
            if len(results) != len(items):
                raise RuntimeError(f"{len(results)} results for {len(items)} items")
            if committed is not None:  # before the connection goes back: that takes a loop turn or two
                committed(results)
        return results

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Result]]], free_slot: Callable[[], None]) -> None:
        items = [item for item, _ in batch]
        if self._metrics is not None:
            self._metrics.batch_sizes.labels(self.name).observe(len(items))
        answered = False

        def committed(results: list[Result]) -> None:
            nonlocal answered
            answered = True
            # The next batch first: its task is scheduled before these requests' handlers, so
            # its statement is on its way to PostgreSQL while this process writes their
            # responses, instead of PostgreSQL waiting for those responses to be written.
            free_slot()
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its request may have gone (client disconnected)
                    future.set_result(result)

        try:
            await self._run(items, committed)
        except Exception as exc:  # noqa: BLE001 - whatever it was, each item gets its own chance
            if answered:  # committed: what failed came after (giving the connection back)
                log.warning("batch_release_failed", batch=self.name, error=type(exc).__name__)
                _fail(batch, f"{self.name}: {type(exc).__name__}")  # none, unless answering itself failed
                return
            if is_outage(exc):
                # The database is out of reach: running each item alone would only wait for it
                # as many times. Each request answers its own way (a 503).
                _fail(batch, f"{self.name}: {type(exc).__name__}")
                return
            if len(batch) > 1:
                log.warning("batch_failed", batch=self.name, size=len(batch), error=type(exc).__name__)
                if self._metrics is not None:
                    self._metrics.batch_failures.labels(self.name).inc()
            for item, future in batch:
                await self._settle_alone(item, future)

    async def _settle_alone(self, item: Item, future: asyncio.Future[Result]) -> None:
        try:
            result = await self._alone(item)
        except ItemFailed as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    async def _alone(self, item: Item) -> Result:
        try:
            return (await self._run([item]))[0]
        except Exception as exc:
            raise ItemFailed(f"{self.name}: {type(exc).__name__}") from exc


def batcher_ctx(key: web.AppKey, name: str, apply: Callable[[web.Application], Apply], **options: Any):
    """A cleanup context that keeps a Batcher under `key`; `apply(app)` gives its apply function,
    `options` the Batcher's. Append it after the pool's: the batcher is closed (its queue
    applied) before the pool."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        batcher: Batcher = Batcher(name, app[pool_key], apply(app), metrics=app[metrics_key], **options)
        batcher.start()
        app[key] = batcher
        try:
            yield
        finally:
            await batcher.close()

    return ctx


class _Slot:
    """A batch's place among the `in_flight`: freed once, when it committed or ended."""

    __slots__ = ("_batcher", "_freed")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._freed = False

    def free(self) -> None:
        if not self._freed:
            self._freed = True
            self._batcher._slots_taken -= 1
            self._batcher._start_batches()


def _fail(batch: list[tuple[Any, asyncio.Future]], reason: str) -> None:
    """Fail the requests of `batch` still waiting: each then does its work its own way."""
    for _, future in batch:
        if not future.done():
            future.set_exception(ItemFailed(reason))
