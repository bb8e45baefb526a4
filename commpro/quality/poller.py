"""The Voice Insights poller: each completed call's summary, partial first (minutes after the
call), complete later (about half an hour after), with backoff while Twilio has none yet, and a
window after which the call is left without one.

Each completed call has a job (commpro.jobs) enqueued with its completion, so several replicas
on one database fetch each summary once.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from commpro import jobs
from commpro.appkeys import config_key, jobs_key, metrics_key, pool_key, twilio_key
from commpro.errors import AppError
from commpro.events import store as events
from commpro.jobs import Backoff, Job, Kind, Later, Retry
from commpro.quality import store
from commpro.quality.alerts import evaluate
from commpro.quality.summary import read_summary
from commpro.settings import Config
from commpro.twilio_gateway import TwilioError

log = structlog.get_logger("commpro.quality")
VOICE_INSIGHTS = "voice-insights"
ALERT_WEBHOOK = "alert-webhook"
NOT_YET_CODES = frozenset({17001, 20404})  # "no summary yet"
# The summary's top-level properties, kept as is for later analysis.
SUMMARY_FIELDS = (
    "account_sid", "call_sid", "call_type", "call_state", "answered_by", "processing_state", "created_time",
    "start_time", "end_time", "duration", "connect_duration", "from_", "to", "carrier_edge", "client_edge",
    "sdk_edge", "sip_edge", "tags", "attributes", "properties", "trust", "annotation",
)


def summary_dict(instance: Any) -> dict[str, Any]:
    return {name.rstrip("_"): getattr(instance, name, None) for name in SUMMARY_FIELDS}


async def enrol_call(conn: asyncpg.Connection, call_id: uuid.UUID, first_fetch_after_s: float) -> None:
    """A completed call's summary will be fetched: its row and its job, in the caller's
    transaction (a no-op unless the call did complete, and for a call enrolled already)."""
    ended_at = await store.enrol_call(conn, call_id)
    if ended_at is not None:
        await jobs.enqueue(conn, VOICE_INSIGHTS, str(call_id),
                           run_at=ended_at + timedelta(seconds=first_fetch_after_s))


async def fetch_summary(app: web.Application, job: Job) -> Later | None:
    """One call's summary: partial first, then complete; None once there is nothing more."""
    settings, pool, gateway = app[config_key].quality, app[pool_key], app[twilio_key]
    async with pool.acquire() as conn:
        row = await store.get_enrolled(conn, uuid.UUID(job.key))
    if row is None:
        return None
    now = job.now
    complete_due = now >= row["ended_at"] + timedelta(seconds=settings.complete_after_s)
    wanted = "complete" if complete_due else "partial"
    try:
        instance = await gateway.call("insights.summary", lambda: gateway.client.insights.v1.calls(
            row["call_sid"]).summary().fetch_async(processing_state=wanted))
    except AppError as exc:  # 404, 17001 (not yet), 20429 (throttled), a deadline: all mean later
        if isinstance(exc, TwilioError) and exc.twilio_code not in NOT_YET_CODES:
            log.warning("quality_fetch_refused", call_id=job.key, twilio_code=exc.twilio_code)
        raise Retry(f"no summary yet: {exc.code}") from None
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
                if webhook_url:
                    await jobs.enqueue(conn, ALERT_WEBHOOK, str(created["id"]))
    for alert in new_alerts:
        app[metrics_key].quality_alerts.labels(alert.kind).inc()
        log.warning("quality_alert", call_id=str(row["call_id"]), user=row["user_id"], kind=alert.kind,
                    source=alert.source, value=alert.value, threshold=alert.threshold)
    if new_alerts and webhook_url:
        app[jobs_key].wake(ALERT_WEBHOOK)
    return Later(next_at) if next_at is not None else None


async def _gave_up(conn: asyncpg.Connection, job: Job, reason: str) -> None:
    await store.gave_up(conn, uuid.UUID(job.key))


def voice_insights(config: Config) -> Kind:
    """Summaries are fetched `quality.concurrency` at a time; while Twilio has none yet, the
    delay doubles from `quality.poll_interval_s`, up to `quality.give_up_after_s` after the call."""
    settings = config.quality
    backoff = Backoff(first_s=settings.poll_interval_s, max_s=1800, jitter=config.jobs.jitter,
                      give_up_after_s=settings.give_up_after_s)
    return Kind(VOICE_INSIGHTS, fetch_summary, backoff, poll_s=settings.poll_interval_s,
                batch=settings.concurrency * 4, concurrency=settings.concurrency, lease_s=config.jobs.lease_s,
                gave_up=_gave_up)
