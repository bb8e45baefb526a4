"""Recurring retention jobs that belong to no domain package of their own: finished jobs, and
idle rate-limit buckets (which nothing purged before).

A rate-limit bucket refills to full within a minute of its last spend, and a full bucket is what
a missing row means, so a bucket idle for `jobs.rate_limit_idle_s` (at least 60) can go without
changing any answer. Its statement lives here rather than in guards/store.py only because guards/
was being reworked at the same time; it can move there.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from commpro.jobs import Kind, retention_kind, store
from commpro.settings import Config


def jobs_retention(config: Config) -> Kind:
    return retention_kind("jobs-retention", store.delete_finished, config.jobs.retention_s,
                     config.jobs.retention_interval_s)


DELETE_IDLE_BUCKETS = "DELETE FROM rate_limits WHERE updated_at < $1"


async def delete_idle_buckets(conn: asyncpg.Connection, before: datetime) -> int:
    return int((await conn.execute(DELETE_IDLE_BUCKETS, before)).split()[-1])


def rate_limits_retention(config: Config) -> Kind:
    return retention_kind("rate-limits-retention", delete_idle_buckets, config.jobs.rate_limit_idle_s,
                     config.jobs.retention_interval_s)
