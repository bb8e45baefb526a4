"""Quality alerts POSTed to ALERT_WEBHOOK_URL: signed, retried with backoff, from an outbox the
poller writes in the alert's own transaction, so the poller never waits on the receiver.

The body is JSON; `X-CommPro-Signature: sha256=<hex>` is HMAC-SHA256 with ALERT_WEBHOOK_SECRET
over `<X-CommPro-Timestamp>.<body>`, so a receiver can check both origin and freshness.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import structlog
from aiohttp import web

from commpro.appkeys import alert_wake_key, config_key, pool_key
from commpro.background import periodic
from commpro.quality import store

log = structlog.get_logger("commpro.alerts")
BATCH = 20
LEASE_S = 120.0


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


async def deliver_round(app: web.Application, now: datetime | None = None) -> int:
    settings, pool = app[config_key].alerts, app[pool_key]
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        due = await store.claim_deliveries(conn, now, BATCH, LEASE_S)
    delivered = 0
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for row in due:
            body = orjson.dumps(alert_payload(row))
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "X-CommPro-Timestamp": timestamp,
                       "X-CommPro-Signature": sign(settings.webhook_secret, timestamp, body)}
            try:
                async with session.post(row["url"], data=body, headers=headers) as resp:
                    error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = type(exc).__name__
            async with pool.acquire() as conn:
                if error is None:
                    await store.mark_delivered(conn, row["id"])
                    delivered += 1
                    continue
                attempts = row["attempts"] + 1
                next_at = None
                if attempts < settings.webhook_attempts:
                    next_at = now + timedelta(seconds=settings.webhook_retry_first_s * 2 ** (attempts - 1))
                await store.delivery_failed(conn, row["id"], next_at, error)
            log.warning("alert_webhook_failed", alert_id=str(row["id"]), attempts=attempts, error=error,
                        gave_up=next_at is None)
    return delivered


def delivery_job(interval_s: float):
    async def job(app: web.Application) -> None:
        app[alert_wake_key].clear()
        await deliver_round(app)

    return periodic("alert-webhook", interval_s, job, wake=alert_wake_key)
