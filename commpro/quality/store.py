"""SQL for call quality, its alerts, and the alert webhook's deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from commpro.quality.alerts import Alert
from commpro.quality.summary import Figures
from commpro.sqlparts import and_filters

# A completed call gets a row; its first fetch is due a while after it ended.
ENROL_CALL = """
INSERT INTO call_quality (call_id, user_id, call_sid, ended_at, next_fetch_at)
SELECT id, user_id, sid, ended_at, ended_at + make_interval(secs => $2)
FROM calls WHERE id = $1 AND status = 'completed' AND sid IS NOT NULL AND ended_at IS NOT NULL
ON CONFLICT (call_id) DO NOTHING
"""


async def enrol_call(conn: asyncpg.Connection, call_id: uuid.UUID, first_fetch_after_s: float) -> None:
    await conn.execute(ENROL_CALL, call_id, first_fetch_after_s)


# A lease, as for prices: claimed rows move their next fetch forward, so another replica skips
# them; no lock is held while Twilio is asked.
CLAIM_DUE = """
UPDATE call_quality SET next_fetch_at = $1 + make_interval(secs => $3)
WHERE call_id IN (
    SELECT call_id FROM call_quality WHERE next_fetch_at <= $1
    ORDER BY next_fetch_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING call_id, user_id, call_sid, state, ended_at, attempts
"""


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int, lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_DUE, now, limit, lease_s)


STORE_SUMMARY = """
UPDATE call_quality SET state = $2, next_fetch_at = $3, attempts = 0, edge = $4, jitter_ms = $5,
       jitter_max_ms = $6, latency_ms = $7, packet_loss_pct = $8, rtt_ms = $9, mos = $10, mos_estimated = $11,
       codec = $12, tags = $13, summary = $14, fetched_at = now()
WHERE call_id = $1
"""


async def store_summary(conn: asyncpg.Connection, call_id: uuid.UUID, state: str, next_fetch_at: datetime | None,
                        figures: Figures, summary: dict[str, Any]) -> None:
    await conn.execute(STORE_SUMMARY, call_id, state, next_fetch_at, figures.edge, figures.jitter_ms,
                       figures.jitter_max_ms, figures.latency_ms, figures.packet_loss_pct, figures.rtt_ms,
                       figures.mos, figures.mos_estimated, figures.codec, figures.tags, summary)


# Not there yet (404, 17001) or throttled (20429): try again later, or stop at the window's end.
RETRY_LATER = """
UPDATE call_quality SET attempts = attempts + 1, next_fetch_at = $2::timestamptz,
       state = CASE WHEN $2::timestamptz IS NULL AND state = 'pending' THEN 'unavailable' ELSE state END
WHERE call_id = $1
"""


async def retry_later(conn: asyncpg.Connection, call_id: uuid.UUID, next_fetch_at: datetime | None) -> None:
    """`next_fetch_at` None: give up; a call with no summary at all becomes 'unavailable'."""
    await conn.execute(RETRY_LATER, call_id, next_fetch_at)


INSERT_ALERT = """
INSERT INTO quality_alerts (call_id, user_id, kind, source, value, threshold)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (call_id, kind) DO NOTHING
RETURNING id, created_at
"""
INSERT_DELIVERY = "INSERT INTO alert_deliveries (alert_id, url) VALUES ($1, $2)"


async def insert_alert(conn: asyncpg.Connection, call_id: uuid.UUID, user_id: str, alert: Alert,
                       webhook_url: str | None) -> asyncpg.Record | None:
    """The new alert, or None when this call already has one of this kind; its webhook delivery
    is queued in the same transaction."""
    row = await conn.fetchrow(INSERT_ALERT, call_id, user_id, alert.kind, alert.source, alert.value, alert.threshold)
    if row is not None and webhook_url:
        await conn.execute(INSERT_DELIVERY, row["id"], webhook_url)
    return row


GET_QUALITY = """
SELECT q.*, c.ended_at AS call_ended_at, c.status AS call_status
FROM calls c LEFT JOIN call_quality q ON q.call_id = c.id
WHERE c.user_id = $1 AND c.id = $2
"""


async def get_quality(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_QUALITY, user_id, call_id)


ALERT_COLUMNS = "id, call_id, kind, source, value, threshold, created_at"
CALL_ALERTS = f"SELECT {ALERT_COLUMNS} FROM quality_alerts WHERE user_id = $1 AND call_id = $2 ORDER BY kind"


async def call_alerts(conn: asyncpg.Connection, user_id: str, call_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(CALL_ALERTS, user_id, call_id)


# The filters present pick the statement (see commpro.sqlparts).
LIST_ALERTS_FILTERS = {"since": "created_at >= {}", "before": "(created_at, id) < ({}, {})"}
LIST_ALERTS = f"""
SELECT {ALERT_COLUMNS} FROM quality_alerts
WHERE user_id = $1{{filters}}
ORDER BY created_at DESC, id DESC
LIMIT {{limit}}
"""


async def list_alerts(conn: asyncpg.Connection, user_id: str, since: datetime | None,
                      before: tuple[datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
    filters, args = and_filters(LIST_ALERTS_FILTERS, {"since": since, "before": before}, first=2)
    query = LIST_ALERTS.format(filters=filters, limit=f"${len(args) + 2}")
    return await conn.fetch(query, user_id, *args, limit)


CLAIM_DELIVERIES = f"""
UPDATE alert_deliveries d SET next_attempt_at = $1 + make_interval(secs => $3)
FROM quality_alerts a
WHERE a.id = d.alert_id AND d.alert_id IN (
    SELECT alert_id FROM alert_deliveries
    WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
    ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING d.url, d.attempts, a.user_id, {", ".join("a." + c for c in ALERT_COLUMNS.split(", "))}
"""


async def claim_deliveries(conn: asyncpg.Connection, now: datetime, limit: int,
                           lease_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_DELIVERIES, now, limit, lease_s)


DELIVERED = "UPDATE alert_deliveries SET delivered_at = now(), attempts = attempts + 1 WHERE alert_id = $1"


async def mark_delivered(conn: asyncpg.Connection, alert_id: uuid.UUID) -> None:
    await conn.execute(DELIVERED, alert_id)


DELIVERY_FAILED = """
UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $3,
       next_attempt_at = coalesce($2::timestamptz, next_attempt_at),
       failed_at = CASE WHEN $2::timestamptz IS NULL THEN now() END
WHERE alert_id = $1
"""


async def delivery_failed(conn: asyncpg.Connection, alert_id: uuid.UUID, next_attempt_at: datetime | None,
                          error: str) -> None:
    """`next_attempt_at` None: no more attempts."""
    await conn.execute(DELIVERY_FAILED, alert_id, next_attempt_at, error)
