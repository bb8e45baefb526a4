"""publish_events, the events of a batch in one statement (sql/0015), against 0011's loop of three
statements per user: the same numbers, rows and notifications, in the same order; the users'
counters locked in user order, so that two batches wait for each other rather than deadlock; and
only users whose stream holds a lease notified (sql/0016)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from commpro.db import create_pool, migrate
from commpro.events import store
from tests.conftest import new_user, until

MIGRATION_0011 = Path(__file__).parent.parent / "sql" / "0011_webhook_batches.sql"
CHANNEL = "test_publish_events"


class Notes:
    """The notifications a connection receives on a channel, in order; wait() for `count`."""

    def __init__(self, count: int) -> None:
        self.received: list[dict] = []
        self._count = count
        self._enough = asyncio.Event()

    def __call__(self, _conn, _pid, _channel, payload: str) -> None:  # delivered after the commit, in order
        self.received.append(json.loads(payload))
        if len(self.received) >= self._count:
            self._enough.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self._enough.wait(), 10)


def publish_events_of_0011() -> str:
    """0011's publish_events, as it was before 0015 replaced it, renamed publish_events_0011."""
    text = MIGRATION_0011.read_text()
    start = text.index("CREATE FUNCTION publish_events(")
    end = text.index("$$;", start) + len("$$;")
    return text[start:end].replace("publish_events(", "publish_events_0011(", 1)


@pytest.fixture
async def pool(empty_database_url):
    pool = await create_pool(empty_database_url)
    async with pool.acquire() as conn:
        await migrate(conn)
        await conn.execute(publish_events_of_0011())
    yield pool
    await pool.close()


async def publish(pool: asyncpg.Pool, function: str, labels: list[str], users: dict[str, str]) -> tuple[list, list]:
    """Publish one event per label (its user's), in one call of `function` after each user already
    has as many events as its label's number, and a stream's lease; (events rows, notifications),
    users as labels."""
    async with pool.acquire() as conn:
        for label, user in users.items():
            await conn.execute("INSERT INTO event_streams (user_id, last_seq, listened_until) "
                               "VALUES ($1, $2, now() + interval '1 hour')", user, int(label[1:]))
    by_user = {user: label for label, user in users.items()}
    notes = Notes(len(labels))
    async with pool.acquire() as listener:
        await listener.add_listener(CHANNEL, notes)
        async with pool.acquire() as conn:
            await conn.execute(f"SELECT {function}($1::text[], $2::text[], $3::jsonb[], $4)",
                               [users[label] for label in labels], [f"t{k}" for k in range(len(labels))],
                               [{"k": k} for k in range(len(labels))], CHANNEL)
        await notes.wait()
        await listener.remove_listener(CHANNEL, notes)
        rows = await listener.fetch("SELECT user_id, seq, type, payload FROM events WHERE user_id = ANY($1) "
                                    "ORDER BY user_id, seq", list(users.values()))
        counters = await listener.fetch("SELECT user_id, last_seq FROM event_streams WHERE user_id = ANY($1)",
                                        list(users.values()))
    return (
        sorted((by_user[r["user_id"]], r["seq"], r["type"], r["payload"]["k"]) for r in rows)
        + sorted((by_user[c["user_id"]], "counter", c["last_seq"]) for c in counters),
        [(by_user[n["user"]], n["id"], n["type"], n["data"]["k"]) for n in notes.received],
    )


async def test_a_batch_of_many_users_is_numbered_and_notified_as_0011_did(pool):
    # Users with no counter yet (0) and with some events already; interleaved, one user many times.
    labels = ["u3", "u0", "u3", "u7", "u0", "u3", "u1", "u7", "u3"]

    def users() -> dict[str, str]:  # in each run, the users sort as their labels do
        run = new_user()
        return {label: f"{run}-{label}" for label in set(labels)}

    new, old = (await publish(pool, "publish_events", labels, users()),
                await publish(pool, "publish_events_0011", labels, users()))
    assert new == old
    rows, notes = new
    assert [r for r in rows if r[0] == "u3" and r[1] != "counter"] == [
        ("u3", 4, "t0", 0), ("u3", 5, "t2", 2), ("u3", 6, "t5", 5), ("u3", 7, "t8", 8)]
    assert [n[1] for n in notes if n[0] == "u3"] == [4, 5, 6, 7]


@pytest.mark.parametrize("how", ["batch", "one event"])
async def test_only_users_a_stream_leases_are_notified(pool, how):
    listened, ended, never = new_user(), new_user(), new_user()
    notes = Notes(1)
    async with pool.acquire() as listener, pool.acquire() as conn:
        await conn.execute("INSERT INTO event_streams (user_id, last_seq, listened_until) VALUES "
                           "($1, 0, now() + interval '1 minute'), ($2, 0, now() - interval '1 second')",
                           listened, ended)
        await listener.add_listener(store.CHANNEL, notes)
        # The one notification comes last: notifications arrive in commit order, so any other
        # would have come before it.
        for user in (never, ended, listened):
            if how == "batch":
                await conn.execute("SELECT publish_events($1::text[], '{t}', '{\"{}\"}', $2)", [user], store.CHANNEL)
            else:
                await store.publish(conn, user, "t", {})
        await notes.wait()
        await listener.remove_listener(store.CHANNEL, notes)
        seqs = await conn.fetch("SELECT user_id, seq FROM events WHERE user_id = ANY($1)", [listened, ended, never])
    assert [n["user"] for n in notes.received] == [listened]
    assert sorted((r["user_id"], r["seq"]) for r in seqs) == sorted([(listened, 1), (ended, 1), (never, 1)])


async def test_nothing_to_publish_changes_nothing(pool):
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM event_streams")
        await conn.execute("SELECT publish_events('{}', '{}', '{}', $1)", CHANNEL)
        assert await conn.fetchval("SELECT count(*) FROM event_streams") == before


async def test_counters_are_locked_in_user_order_so_batches_never_deadlock(pool):
    first, second = sorted([new_user(), new_user()])
    async with pool.acquire() as a, pool.acquire() as b:
        await a.execute("SET lock_timeout = '5s'")
        await b.execute("SET lock_timeout = '5s'")
        async with a.transaction():
            await a.execute("SELECT publish_events($1::text[], '{t}', '{\"{}\"}', $2)", [first], CHANNEL)
            # B publishes for both, the second user first: in user order, it waits on the first
            # user's counter (A's) without having taken the second's.
            waiting = asyncio.create_task(b.execute(
                "SELECT publish_events($1::text[], '{t,t}', '{\"{}\",\"{}\"}', $2)", [second, first], CHANNEL))
            await until(lambda: a.fetchval("SELECT count(*) > 0 FROM pg_locks WHERE NOT granted AND pid = $1",
                                           b.get_server_pid()))
            # A now takes the second user's counter: it is free (had B taken it, this would wait for
            # B, which waits for A: a deadlock).
            await a.execute("SELECT publish_events($1::text[], '{t}', '{\"{}\"}', $2)", [second], CHANNEL)
        await waiting
        seqs = await a.fetch("SELECT user_id, seq FROM events WHERE user_id = ANY($1) ORDER BY user_id, seq",
                             [first, second])
    assert [(r["user_id"], r["seq"]) for r in seqs] == [(first, 1), (first, 2), (second, 1), (second, 2)]
