"""SQL for the event log. publish() runs in the caller's transaction: the event exists, and is
announced, exactly when the change it describes is committed.

Each user's events carry a number from that user's counter (event_streams), taken with a row
lock that the publishing transaction holds until it ends. A second transaction publishing for
the same user waits for the first to commit or roll back, so a user's events commit, and are
notified, in the order of their numbers: a stream that has sent number n knows that n + 1 is the
next one to come, and ?since=n replays exactly what followed. A rolled-back transaction gives
its number back with the lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

CHANNEL = "commpro_events"
# An event's time as the stream sends it, live or replayed alike.
AT = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""

# PUBLISH as pieces of a larger statement, for webhooks that do all their work in one statement
# (one round trip, no BEGIN/COMMIT): the statement defines `published` (user_id, type, payload:
# at most one row per user), appends PUBLISH_CTES to its WITH list, and joins NOTIFY_EVENT into
# its final SELECT (`notified.seq`: the event's number, NULL when nothing was published). The
# guarantees are PUBLISH's. `published` should depend on every other change of the statement, so
# that the counter is locked last (CTEs run in the order their results are needed, not in the
# order they are written).
PUBLISH_CTES = """
stream AS (
    INSERT INTO event_streams AS s (user_id, last_seq) SELECT user_id, 1 FROM published
    ON CONFLICT (user_id) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING user_id, last_seq, listened_until > now() AS listened
), event AS (
    INSERT INTO events (user_id, seq, type, payload)
    SELECT s.user_id, s.last_seq, p.type, p.payload FROM stream s JOIN published p USING (user_id)
    RETURNING user_id, seq, type, payload, created_at
)"""
# Notified only while a process listens for the user (LEASE, below).
NOTIFY_EVENT = f"""
LEFT JOIN LATERAL (
    SELECT e.seq, CASE WHEN s.listened THEN pg_notify('{CHANNEL}', json_build_object(
        'id', e.seq, 'user', e.user_id, 'type', e.type, 'data', e.payload, 'at', {AT})::text) END
    FROM event e JOIN stream s ON s.user_id = e.user_id
) notified ON true"""

# The counter, then the event, then NOTIFY (delivered at commit, and not at all on rollback), in
# one round trip. Publish last in a transaction: the user's lock is held from here to the end.
PUBLISH = f"""
WITH published (user_id, type, payload) AS (VALUES ($1::text, $2::text, $3::jsonb)), {PUBLISH_CTES}
SELECT notified.seq FROM published {NOTIFY_EVENT}
"""


async def publish(conn: asyncpg.Connection, user_id: str, type_: str, payload: dict[str, Any]) -> int:
    """Record and announce one event of `user_id`; its number in the user's sequence."""
    return await conn.fetchval(PUBLISH, user_id, type_, payload)


# Many events of many users, in one statement (sql/0011_webhook_batches.sql): each user's counter
# once, users in the database's order (the order every batch locks them in, so that they wait for
# each other rather than deadlock), each user's events numbered in the order given.
PUBLISH_MANY = "SELECT publish_events($1::text[], $2::text[], $3::jsonb[], $4)"


async def publish_many(conn: asyncpg.Connection, events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Record and announce (user_id, type, payload) events; last in the caller's transaction,
    like publish()."""
    if events:
        await conn.execute(PUBLISH_MANY, [e[0] for e in events], [e[1] for e in events], [e[2] for e in events],
                           CHANNEL)


# A process that streams users leases their counter rows (sql/0016): publishers notify a user's
# events while the lease runs. Taken under each row's lock (in user order, as publishers take
# them), after any publisher holding it has committed: what that publisher wrote is in the log a
# new stream replays, and every later publisher sees the lease. `last_seq`: the user's last
# number before the lease, where a stream without ?since starts.
LEASE = """
INSERT INTO event_streams AS s (user_id, last_seq, listened_until)
SELECT u, 0, now() + make_interval(secs => $2) FROM unnest($1::text[]) AS u ORDER BY u
ON CONFLICT (user_id) DO UPDATE SET listened_until = greatest(s.listened_until, EXCLUDED.listened_until)
RETURNING s.user_id, s.last_seq
"""


async def lease(conn: asyncpg.Connection, user_ids: list[str], lease_s: float) -> dict[str, int]:
    """Lease (or renew) the notifications of `user_ids` (each once) for `lease_s`; each user's
    last event number."""
    rows = await conn.fetch(LEASE, user_ids, float(lease_s))
    return {r["user_id"]: r["last_seq"] for r in rows}


EVENTS_SINCE = f"""
SELECT seq AS id, user_id, type, payload, {AT} AS at FROM events
WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""


async def events_since(conn: asyncpg.Connection, user_id: str, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(EVENTS_SINCE, user_id, after_id, limit)


EVENTS_BETWEEN = f"""
SELECT seq AS id, user_id, type, payload, {AT} AS at FROM events
WHERE user_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq
"""


async def events_between(conn: asyncpg.Connection, user_id: str, after_id: int,
                         before_id: int) -> list[asyncpg.Record]:
    """The events strictly between two numbers: what a stream missed, should a notification
    ever be lost."""
    return await conn.fetch(EVENTS_BETWEEN, user_id, after_id, before_id)


DELETE_OLD = "DELETE FROM events WHERE created_at < $1"


async def delete_old_events(conn: asyncpg.Connection, before: datetime) -> int:
    result = await conn.execute(DELETE_OLD, before)
    return int(result.split()[-1])
