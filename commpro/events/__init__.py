"""Real-time events: a user's own, pushed over a WebSocket, fanned out across replicas.

A change publishes its event in its own transaction (events.store.publish): the row is the
durable log a reconnecting client replays with ?since=<id>, and NOTIFY tells every process. Each
process LISTENs on one connection of its own and hands each event to the local subscribers of
that user. A subscriber's queue is bounded: one that falls behind is disconnected, never waited
for, so a slow client cannot hold up the others.

Only the events of users some process streams are notified (sql/0016): a stream leases its
user's counter before it replays the log (events.store.LEASE), and each process renews the
leases of its streams every third of `events.listen_lease_s`. Each stream knows until when its
own lease surely runs, by this process's clock (from before the statement that took it was
sent, less a tenth): once that time has passed without a renewal answered before it (the
database out of reach, a pool or a lock that kept the renewal waiting), the stream ends with
4009, as after a lost LISTEN, since an event may have gone un-notified meanwhile. By the
stream's own time, not the row's: another stream's lease would hide the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from commpro.appkeys import config_key, hub_key, metrics_key, pool_key, tasks_key
from commpro.dbhealth import is_outage
from commpro.events import store
from commpro.jobs import Kind, retention_kind
from commpro.settings import Config

log = structlog.get_logger("commpro.events")
RELISTEN_S = 0.2
RENEW_SLICE = 500


class Subscriber:
    def __init__(self, user_id: str, size: int) -> None:
        self.user_id = user_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        # Set when the subscriber fell too far behind, or when the process shuts down.
        self.overflowed = asyncio.Event()
        self.going_away = False
        self.resync = False
        # Monotonic time until which this stream's user is surely notified (its lease); None
        # until the stream has taken it.
        self.covered_until: float | None = None


class EventHub:
    def __init__(self, queue_size: int, lease_s: float) -> None:
        self.queue_size = queue_size
        self.lease_s = lease_s
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)

    def subscribe(self, user_id: str) -> Subscriber:
        sub = Subscriber(user_id, self.queue_size)
        self._subscribers[user_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subscribers.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.user_id]

    def dispatch(self, event: dict[str, Any]) -> None:
        for sub in list(self._subscribers.get(event.get("user"), ())):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed.set()

    def _every(self) -> list[Subscriber]:
        return [sub for subs in self._subscribers.values() for sub in subs]

    def leased_subscribers(self) -> list[Subscriber]:
        """The streams whose lease is taken, to renew."""
        return [sub for sub in self._every() if sub.covered_until is not None]

    def leased(self, subs: list[Subscriber], sent_at: float) -> None:
        """`subs`' leases were taken or renewed by a statement sent at `sent_at` (monotonic),
        which has answered. A cover that ended before this answer stays ended (uncovered())."""
        now = time.monotonic()
        for sub in subs:
            if sub.covered_until is None or sub.covered_until >= now:
                # A tenth off: the database's clock may run a little faster than this one.
                sub.covered_until = sent_at + self.lease_s * 0.9

    def uncovered(self) -> list[Subscriber]:
        """The streams whose cover has ended: an event of theirs may have gone un-notified."""
        now = time.monotonic()
        return [sub for sub in self.leased_subscribers() if (sub.covered_until or 0) < now]

    def close(self, subs: list[Subscriber], resync: bool = False) -> None:
        """End these streams: on shutdown (1001, going away), so that none holds the process up,
        or after events may have been missed (`resync`: 4009, reconnect with ?since)."""
        for sub in subs:
            sub.going_away, sub.resync = not resync, resync
            sub.overflowed.set()

    def close_all(self, resync: bool = False) -> None:
        self.close(self._every(), resync)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            self.dispatch(orjson.loads(payload))
        except orjson.JSONDecodeError:
            log.warning("event_unreadable")


async def _listen(config, hub: EventHub) -> tuple[asyncpg.Connection, asyncio.Event]:
    """LISTEN on a connection of its own (a pooled one would be handed to someone else); the
    event is set when that connection is lost."""
    lost = asyncio.Event()
    conn = await asyncpg.connect(config.database.url, timeout=config.database.connect_timeout_s)
    try:
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(store.CHANNEL, hub.on_notify)
    except BaseException:
        conn.terminate()
        raise
    return conn, lost


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    hub = EventHub(config.events.queue_size, config.events.listen_lease_s)
    conn, lost = await _listen(config, hub)
    app[hub_key] = hub

    async def keep_listening() -> None:
        """A lost LISTEN connection is made again. Whatever was notified meanwhile never reached
        this process, so its streams are ended (4009): clients reconnect with ?since and the
        durable log fills the gap."""
        nonlocal conn, lost
        while True:
            await lost.wait()
            log.warning("event_listener_lost")
            while True:
                try:
                    conn, lost = await _listen(config, hub)
                    break
                except Exception as exc:  # noqa: BLE001 - this loop must outlive any failure
                    # A short fixed interval, not a growing one: a refused connect costs nothing,
                    # and the stream is back within RELISTEN_S of the database's return.
                    if not is_outage(exc):
                        log.warning("event_listener_retry", error=type(exc).__name__)
                    await asyncio.sleep(RELISTEN_S)
            hub.close_all(resync=True)
            log.info("event_listener_restored")

    async def keep_leases() -> None:
        """Renew the leases of the streams here, every third of their length; end with 4009 the
        streams whose cover ended, whether their renewal failed or answered too late."""
        every = hub.lease_s / 3
        while True:
            await asyncio.sleep(every)
            subs = hub.leased_subscribers()
            users = sorted({sub.user_id for sub in subs})
            # In slices, each its own statement: each holds its users' counters until it commits,
            # and one that fails leaves the others renewed.
            for start in range(0, len(users), RENEW_SLICE):
                chunk = users[start:start + RENEW_SLICE]
                sent_at = time.monotonic()
                try:
                    async with app[pool_key].acquire(timeout=every) as renewing:
                        await store.lease(renewing, chunk, hub.lease_s)
                except Exception as exc:  # noqa: BLE001 - its streams' cover runs out, then 4009
                    # An outage (a timed-out wait for the pool counts as one) is reported by the
                    # database's health; event_leases_lapsed says what it cost the streams.
                    if not is_outage(exc):
                        log.warning("event_leases_not_renewed", error=type(exc).__name__)
                    continue
                renewed = set(chunk)
                hub.leased([sub for sub in subs if sub.user_id in renewed], sent_at)
            app[metrics_key].job_succeeded("event-leases")  # its lag on /status
            lapsed = hub.uncovered()
            if lapsed:
                # Their events may have gone un-notified for a while: the log has them.
                log.warning("event_leases_lapsed", streams=len(lapsed))
                hub.close(lapsed, resync=True)

    supervisor = asyncio.create_task(keep_listening(), name="event-listener")
    app[tasks_key]["event-listener"] = supervisor
    renewer = asyncio.create_task(keep_leases(), name="event-leases")
    app[tasks_key]["event-leases"] = renewer

    async def close_streams(_app: web.Application) -> None:
        hub.close_all()

    # on_shutdown runs before aiohttp waits for handlers to finish: open WebSockets end first.
    app.on_shutdown.append(close_streams)
    try:
        yield
    finally:
        for task in (supervisor, renewer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await conn.close()


def events_retention(config: Config) -> Kind:
    """Events older than `events.retention_s` go, every `retention_interval_s`."""
    return retention_kind("events-retention", store.delete_old_events, config.events.retention_s,
                     config.events.retention_interval_s)
