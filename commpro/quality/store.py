"""SQL for call quality, its alerts, and the alert webhook's deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from commpro.quality.alerts import Alert
from commpro.quality.summary import Figures
from commpro.sqlparts import and_filters

# A completed call gets a row (its summary is fetched by a job); None when it has one already,
# or did not complete. Its summary is the one of the leg that carried the conversation on the
# user's side: the app leg that took the call (only SDK legs have a MOS), else the call's own leg
# (the carrier's figures).
ENROL_CALL = """
INSERT INTO call_quality (call_id, user_id, call_sid, ended_at)
SELECT id, user_id,
       coalesce((SELECT l.sid FROM call_legs l WHERE l.sid = c.answered_leg_sid AND l.device = 'app'), c.sid),
       ended_at
FROM calls c WHERE id = $1 AND status = 'completed' AND sid IS NOT NULL AND ended_at IS NOT NULL
ON CONFLICT (call_id) DO NOTHING
RETURNING ended_at
"""


async def enrol_call(conn: asyncpg.Connection, call_id: uuid.UUID) -> datetime | None:
    """The call's end when it is newly enrolled."""
    return await conn.fetchval(ENROL_CALL, call_id)


GET_ENROLLED = "SELECT call_id, user_id, call_sid, state, ended_at FROM call_quality WHERE call_id = $1"


async def get_enrolled(conn: asyncpg.Connection, call_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_ENROLLED, call_id)


STORE_SUMMARY = """
UPDATE call_quality SET state = $2, next_fetch_at = $3, edge = $4, jitter_ms = $5,
       jitter_max_ms = $6, latency_ms = $7, packet_loss_pct = $8, rtt_ms = $9, mos = $10, mos_estimated = $11,
       codec = $12, tags = $13, summary = $14, fetched_at = now()
WHERE call_id = $1
"""


async def store_summary(conn: asyncpg.Connection, call_id: uuid.UUID, state: str, next_fetch_at: datetime | None,
                        figures: Figures, summary: dict[str, Any]) -> None:
    await conn.execute(STORE_SUMMARY, call_id, state, next_fetch_at, figures.edge, figures.jitter_ms,
                       figures.jitter_max_ms, figures.latency_ms, figures.packet_loss_pct, figures.rtt_ms,
                       figures.mos, figures.mos_estimated, figures.codec, figures.tags, summary)


# Given up: a call with no summary at all becomes 'unavailable'; a partial one stays.
GAVE_UP = """
UPDATE call_quality SET next_fetch_at = NULL, state = CASE WHEN state = 'pending' THEN 'unavailable' ELSE state END
WHERE call_id = $1
"""


async def gave_up(conn: asyncpg.Connection, call_id: uuid.UUID) -> None:
    await conn.execute(GAVE_UP, call_id)


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


# job_run_at: when the voice-insights job (commpro.jobs) will next fetch its summary.
GET_QUALITY = """
SELECT q.*, c.ended_at AS call_ended_at, c.status AS call_status,
       (SELECT j.run_at FROM jobs j WHERE j.kind = 'voice-insights' AND j.key = c.id::text
          AND j.state = 'pending') AS job_run_at
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


GET_DELIVERY = f"""
SELECT d.url, a.user_id, {", ".join("a." + c for c in ALERT_COLUMNS.split(", "))}
FROM alert_deliveries d JOIN quality_alerts a ON a.id = d.alert_id
WHERE d.alert_id = $1 AND d.delivered_at IS NULL AND d.failed_at IS NULL
"""


async def get_delivery(conn: asyncpg.Connection, alert_id: uuid.UUID) -> asyncpg.Record | None:
    """An alert still to deliver, with its URL; None once delivered or given up."""
    return await conn.fetchrow(GET_DELIVERY, alert_id)


DELIVERED = "UPDATE alert_deliveries SET delivered_at = now(), attempts = attempts + 1 WHERE alert_id = $1"


async def mark_delivered(conn: asyncpg.Connection, alert_id: uuid.UUID) -> None:
    await conn.execute(DELIVERED, alert_id)


DELIVERY_FAILED = "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $2 WHERE alert_id = $1"


async def delivery_failed(conn: asyncpg.Connection, alert_id: uuid.UUID, error: str) -> None:
    await conn.execute(DELIVERY_FAILED, alert_id, error)


DELIVERY_GAVE_UP = "UPDATE alert_deliveries SET failed_at = now() WHERE alert_id = $1 AND delivered_at IS NULL"


async def delivery_gave_up(conn: asyncpg.Connection, alert_id: uuid.UUID) -> None:
    await conn.execute(DELIVERY_GAVE_UP, alert_id)
