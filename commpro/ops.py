"""Operations endpoints: liveness, readiness, and the service's dashboard."""

from __future__ import annotations

import hmac
import re
import time
import uuid

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from commpro import __version__
from commpro.appkeys import config_key, metrics_key, own_auth_key, pool_key, started_at_key, tasks_key, twilio_key
from commpro.auth import OWN_AUTH, auth_for_path
from commpro.errors import ServiceUnavailable, Unauthorized
from commpro.jobs import job_stats

routes = web.RouteTableDef()
READY_TIMEOUT_S = 2.0


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _database_latency_ms(request: web.Request) -> float | None:
    started = time.perf_counter()
    try:
        await request.config_dict[pool_key].fetchval("SELECT 1", timeout=READY_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - whatever the failure (refused, timed out, closed), not ready
        return None
    return round((time.perf_counter() - started) * 1000, 2)


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    if await _database_latency_ms(request) is None:
        raise ServiceUnavailable("The database is unreachable")
    return web.json_response({"status": "ready"})


async def service_status(request: web.Request) -> dict:
    """What /status and the console page show: nothing about any user, nothing secret."""
    config = request.config_dict[config_key]
    latency = await _database_latency_ms(request)
    return {
        "service": "commpro",
        "version": __version__,
        "environment": config.app.env,
        "uptimeSec": round(time.monotonic() - request.config_dict[started_at_key], 1),
        "database": {"ok": latency is not None, "latencyMs": latency},
        "twilio": {"mode": request.config_dict[twilio_key].mode},
        "backgroundTasks": background_tasks(request.config_dict, await _job_stats(request)),
        "endpoints": endpoint_table(request.app),
    }


def background_tasks(app: web.Application, jobs: dict[str, dict[str, float]]) -> list[dict]:
    """Each background loop, whether it runs, and its lag: seconds since it last completed a
    round (None before its first); for a job kind, its queue too (due, running, failed, and the
    lag of its oldest due job)."""
    tasks = app.get(tasks_key, {})
    metrics = app.get(metrics_key)
    last = metrics.live.last_success if metrics is not None else {}
    now = time.monotonic()
    return [
        {"name": name, "running": not task.done(),
         "lagSec": round(now - last[name], 1) if name in last else None,
         **({"jobs": jobs[name]} if name in jobs else {})}
        for name, task in sorted(tasks.items())
    ]


@routes.get("/status", name="status")
async def status(request: web.Request) -> web.Response:
    return web.json_response(await service_status(request))


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; behind metrics.token when one is set."""
    token = request.config_dict[config_key].metrics.token
    # Bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, hence a 500).
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
    if token and not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise Unauthorized("This endpoint needs the metrics token")
    await _job_stats(request)  # sets the jobs' gauges
    body = generate_latest(request.config_dict[metrics_key].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _job_stats(request: web.Request) -> dict[str, dict[str, float]]:
    try:
        return await job_stats(request.app)
    except Exception:  # noqa: BLE001 - the dashboard and metrics still answer without the database
        return {}


def endpoint_table(app: web.Application) -> list[dict[str, str | None]]:
    """Every route of the app and its sub-apps, with the auth each one needs."""
    rows = []
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            # A sub-app's resources already carry its prefix.
            sub_rows = endpoint_table(resource._app)
            if resource._app.get(own_auth_key, False):
                sub_rows = [{**row, "auth": OWN_AUTH} for row in sub_rows]
            rows.extend(sub_rows)
            continue
        path = resource.canonical
        for route in resource:
            if route.method == "HEAD":
                continue
            # A placeholder stands for one id-like segment when matching the auth patterns.
            auth = auth_for_path(re.sub(r"\{[^}]+\}", str(uuid.UUID(int=0)), path))
            rows.append({"method": route.method, "path": path, "name": route.name, "auth": auth})
    return sorted(rows, key=lambda r: (r["path"], r["method"]))
