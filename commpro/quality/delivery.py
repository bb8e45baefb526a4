"""Quality alerts POSTed to ALERT_WEBHOOK_URL: signed, retried with backoff, from an outbox the
poller writes in the alert's own transaction with a job (commpro.jobs) for each, so the poller
never waits on the receiver.

The body is JSON; `X-CommPro-Signature: sha256=<hex>` is HMAC-SHA256 with ALERT_WEBHOOK_SECRET
over `<X-CommPro-Timestamp>.<body>`, so a receiver can check both origin and freshness.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

import aiohttp
import asyncpg
import orjson
import structlog
from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.jobs import Backoff, Job, Kind, Retry
from commpro.quality import store
from commpro.quality.poller import ALERT_WEBHOOK
from commpro.settings import Config

log = structlog.get_logger("commpro.alerts")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def alert_payload(row) -> dict:
    return {
        "type": "quality.alert",
        "alert": {"id": str(row["id"]), "callId": str(row["call_id"]), "userId": row["user_id"],
                  "kind": row["kind"], "source": row["source"], "value": row["value"],
                  "threshold": row["threshold"], "createdAt": row["created_at"].isoformat()},
    }


async def deliver_alert(app: web.Application, job: Job) -> None:
    """POST one alert to its URL; any answer but a 2xx is retried."""
    settings, pool = app[config_key].alerts, app[pool_key]
    alert_id = uuid.UUID(job.key)
    async with pool.acquire() as conn:
        row = await store.get_delivery(conn, alert_id)
    if row is None:  # delivered already, or its call is gone
        return
    body = orjson.dumps(alert_payload(row))
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-CommPro-Timestamp": timestamp,
               "X-CommPro-Signature": sign(settings.webhook_secret, timestamp, body)}
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(row["url"], data=body, headers=headers) as resp:
                error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = type(exc).__name__
    async with pool.acquire() as conn:
        if error is None:
            await store.mark_delivered(conn, alert_id)
            return
        await store.delivery_failed(conn, alert_id, error)
    log.warning("alert_webhook_failed", alert_id=job.key, attempts=job.attempts, error=error)
    raise Retry(error)


async def _gave_up(conn: asyncpg.Connection, job: Job, reason: str) -> None:
    await store.delivery_gave_up(conn, uuid.UUID(job.key))


def alert_webhook(config: Config) -> Kind:
    settings = config.alerts
    backoff = Backoff(first_s=settings.webhook_retry_first_s, max_s=3600, jitter=config.jobs.jitter,
                      max_attempts=settings.webhook_attempts)
    return Kind(ALERT_WEBHOOK, deliver_alert, backoff, poll_s=settings.delivery_interval_s,
                concurrency=4, lease_s=max(config.jobs.lease_s, settings.webhook_timeout_s * 2), gave_up=_gave_up)
