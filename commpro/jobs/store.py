"""SQL for the job queue. Store functions take a connection; the caller owns the transaction.

Two clocks, on purpose: `run_at` (when a job is due) is compared with the caller's `now`, so
tests can move time forward; a lease (`lease_until`) is always database time, so no caller's
idea of the time can take a job another worker is running.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

ENQUEUE = """
INSERT INTO jobs (kind, key, payload, run_at)
VALUES ($1, $2, $3, coalesce($4::timestamptz, now() + make_interval(secs => $5)))
ON CONFLICT (kind, key) DO NOTHING
RETURNING id
"""


async def enqueue(conn: asyncpg.Connection, kind: str, key: str, payload: dict[str, Any],
                  run_at: datetime | None, after_s: float) -> bool:
    """True when the job is new; the same (kind, key) again changes nothing."""
    return await conn.fetchval(ENQUEUE, kind, key, payload, run_at, float(after_s)) is not None


CLAIM = """
UPDATE jobs SET attempts = attempts + 1, claim = $4,
       lease_until = clock_timestamp() + make_interval(secs => $5), updated_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE kind = $1 AND state = 'pending' AND run_at <= $2
      AND (lease_until IS NULL OR lease_until < clock_timestamp())
    ORDER BY run_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, key, payload, attempts, created_at
"""


async def claim(conn: asyncpg.Connection, kind: str, now: datetime, limit: int, token: uuid.UUID,
                lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM, kind, now, limit, token, float(lease_s))


RENEW = """
UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => $3)
WHERE claim = $1 AND id = ANY($2::bigint[]) AND state = 'pending'
"""


async def renew(conn: asyncpg.Connection, token: uuid.UUID, ids: list[int], lease_s: float) -> None:
    await conn.execute(RENEW, token, ids, float(lease_s))


# Each outcome applies only while this worker still holds the claim: a worker whose lease was
# lost (and whose job another worker has claimed since) changes nothing.
RESCHEDULE = """
UPDATE jobs SET run_at = $3, attempts = $4, last_error = $5, claim = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1 AND claim = $2
"""


async def reschedule(conn: asyncpg.Connection, job_id: int, token: uuid.UUID, run_at: datetime,
                     attempts: int, error: str | None) -> bool:
    """Due again at `run_at`; False when the claim was lost."""
    return await conn.execute(RESCHEDULE, job_id, token, run_at, attempts, error) == "UPDATE 1"


FINISH = """
UPDATE jobs SET state = $3, last_error = $4, claim = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1 AND claim = $2
"""


async def finish(conn: asyncpg.Connection, job_id: int, token: uuid.UUID, state: str, error: str | None) -> bool:
    """`state`: done or failed (given up); False when the claim was lost."""
    return await conn.execute(FINISH, job_id, token, state, error) == "UPDATE 1"


# On shutdown: the jobs this process was running are due again at once, for another replica or
# the next start, and the interrupted run does not count as an attempt.
RELEASE = """
UPDATE jobs SET claim = NULL, lease_until = NULL, attempts = greatest(attempts - 1, 0), updated_at = now()
WHERE claim = $1 AND id = ANY($2::bigint[])
"""


async def release(conn: asyncpg.Connection, token: uuid.UUID, ids: list[int]) -> None:
    await conn.execute(RELEASE, token, ids)


ENSURE_RECURRING = """
INSERT INTO jobs (kind, key) VALUES ($1, 'recurring')
ON CONFLICT (kind, key) DO UPDATE SET state = 'pending' WHERE jobs.state <> 'pending'
"""


async def ensure_recurring(conn: asyncpg.Connection, kind: str) -> None:
    """The one row of a recurring kind, due at once when it is new."""
    await conn.execute(ENSURE_RECURRING, kind)


# Pending jobs through their partial index, finished ones counted only where they failed.
STATS = """
SELECT kind,
       count(*) FILTER (WHERE run_at <= $1 AND (lease_until IS NULL OR lease_until < clock_timestamp())) AS due,
       count(*) FILTER (WHERE lease_until >= clock_timestamp()) AS running,
       0 AS failed,
       coalesce(extract(epoch FROM $1 - min(run_at) FILTER (
           WHERE run_at <= $1 AND (lease_until IS NULL OR lease_until < clock_timestamp()))), 0)::float8 AS lag_s
FROM jobs WHERE state = 'pending' GROUP BY kind
UNION ALL
SELECT kind, 0, 0, count(*), 0 FROM jobs WHERE state = 'failed' GROUP BY kind
"""


async def stats(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(STATS, now)


DELETE_FINISHED = "DELETE FROM jobs WHERE state <> 'pending' AND updated_at < $1"


async def delete_finished(conn: asyncpg.Connection, before: datetime) -> int:
    return int((await conn.execute(DELETE_FINISHED, before)).split()[-1])


GET_JOB = "SELECT * FROM jobs WHERE kind = $1 AND key = $2"


async def get_job(conn: asyncpg.Connection, kind: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_JOB, kind, key)
