"""The Voice Insights poller: each completed call's summary, partial first (minutes after the
call), complete later (about half an hour after), with backoff while Twilio has none yet, and a
window after which the call is left without one.

Rows are claimed with a lease (FOR UPDATE SKIP LOCKED), so several replicas on one database
fetch each summary once; a semaphore bounds how many fetches run at a time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from commpro.appkeys import alert_wake_key, config_key, metrics_key, pool_key, twilio_key
from commpro.background import periodic
from commpro.errors import AppError
from commpro.events import store as events
from commpro.quality import store
from commpro.quality.alerts import evaluate
from commpro.quality.summary import read_summary
from commpro.twilio_gateway import TwilioError

log = structlog.get_logger("commpro.quality")
LEASE_S = 300.0
NOT_YET_CODES = frozenset({17001, 20404})  # "no summary yet"
# The summary's top-level properties, kept as is for later analysis.
SUMMARY_FIELDS = (
    "account_sid", "call_sid", "call_type", "call_state", "answered_by", "processing_state", "created_time",
    "start_time", "end_time", "duration", "connect_duration", "from_", "to", "carrier_edge", "client_edge",
    "sdk_edge", "sip_edge", "tags", "attributes", "properties", "trust", "annotation",
)


def summary_dict(instance: Any) -> dict[str, Any]:
    return {name.rstrip("_"): getattr(instance, name, None) for name in SUMMARY_FIELDS}


async def poll_round(app: web.Application, now: datetime | None = None) -> int:
    """Fetch every summary that is due; return how many were stored. `now` lets tests move
    time forward instead of waiting."""
    settings, pool = app[config_key].quality, app[pool_key]
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        due = await store.claim_due(conn, now, settings.concurrency * 4, LEASE_S)
    limit = asyncio.Semaphore(settings.concurrency)

    async def one(row) -> bool:
        async with limit:
            try:
                return await _fetch_one(app, row, now)
            except Exception:  # one call's trouble never stops the others
                log.exception("quality_fetch_crashed", call_id=str(row["call_id"]))
                return False

    return sum(await asyncio.gather(*(one(row) for row in due)))


async def _fetch_one(app: web.Application, row, now: datetime) -> bool:
    settings, pool, gateway = app[config_key].quality, app[pool_key], app[twilio_key]
    complete_due = now >= row["ended_at"] + timedelta(seconds=settings.complete_after_s)
    wanted = "complete" if complete_due else "partial"
    try:
        instance = await gateway.call("insights.summary", lambda: gateway.client.insights.v1.calls(
            row["call_sid"]).summary().fetch_async(processing_state=wanted))
    except AppError as exc:  # 404, 17001 (not yet), 20429 (throttled), a deadline: all mean later
        if isinstance(exc, TwilioError) and exc.twilio_code not in NOT_YET_CODES:
            log.warning("quality_fetch_refused", call_id=str(row["call_id"]), twilio_code=exc.twilio_code)
        await _later(pool, settings, row, now)
        return False
    summary = summary_dict(instance)
    figures = read_summary(summary)
    state = "complete" if summary.get("processing_state") == "complete" else "partial"
    next_at = None
    if state == "partial":
        next_at = max(row["ended_at"] + timedelta(seconds=settings.complete_after_s),
                      now + timedelta(seconds=settings.poll_interval_s))
        if next_at > row["ended_at"] + timedelta(seconds=settings.give_up_after_s):
            next_at = None  # the partial summary is all there will be
    webhook_url = app[config_key].alerts.webhook_url or None
    new_alerts = []
    async with pool.acquire() as conn, conn.transaction():
        await store.store_summary(conn, row["call_id"], state, next_at, figures, summary)
        for alert in evaluate(figures, settings):
            created = await store.insert_alert(conn, row["call_id"], row["user_id"], alert, webhook_url)
            if created is not None:
                new_alerts.append(alert)
                await events.publish(conn, row["user_id"], "quality.alert", {
                    "alertId": str(created["id"]), "callId": str(row["call_id"]), "kind": alert.kind})
    for alert in new_alerts:
        app[metrics_key].quality_alerts.labels(alert.kind).inc()
        log.warning("quality_alert", call_id=str(row["call_id"]), user=row["user_id"], kind=alert.kind,
                    source=alert.source, value=alert.value, threshold=alert.threshold)
    if new_alerts and webhook_url:
        app[alert_wake_key].set()
    return True


async def _later(pool, settings, row, now: datetime) -> None:
    delay = min(settings.poll_interval_s * 2 ** row["attempts"], 1800)
    next_at = now + timedelta(seconds=delay)
    if next_at > row["ended_at"] + timedelta(seconds=settings.give_up_after_s):
        next_at = None
        log.info("quality_gave_up", call_id=str(row["call_id"]), state=row["state"])
    async with pool.acquire() as conn:
        await store.retry_later(conn, row["call_id"], next_at)


def quality_job(interval_s: float):
    return periodic("voice-insights", interval_s, poll_round)
