"""GET /api/calls/{id}/quality and GET /api/calls/alerts."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from commpro.appkeys import pool_key
from commpro.auth import user_id
from commpro.errors import NotFound
from commpro.quality import store
from commpro.validation import Fields, decode_cursor, iso, next_cursor, parse_uuid

routes = web.RouteTableDef()


def alert_json(row) -> dict[str, Any]:
    return {"id": str(row["id"]), "callId": str(row["call_id"]), "kind": row["kind"], "source": row["source"],
            "value": row["value"], "threshold": row["threshold"], "createdAt": row["created_at"].isoformat()}


def _ms(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


@routes.get("/api/calls/alerts", name="quality_alerts")
async def list_alerts(request: web.Request) -> web.Response:
    fields = Fields(request.query, allowed=("limit", "cursor", "since"))
    limit = fields.integer("limit", required=False, low=1, high=200, default=50)
    since = fields.timestamp("since")
    fields.check()
    before = decode_cursor(request.query["cursor"]) if "cursor" in request.query else None
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_alerts(conn, user_id(request), since, before, limit)
    return web.json_response({"alerts": [alert_json(r) for r in rows], "nextCursor": next_cursor(rows, limit)})


@routes.get("/api/calls/{id}/quality", name="call_quality")
async def call_quality(request: web.Request) -> web.Response:
    """jitter, latency and rtt in milliseconds, packetLoss in percent; `state` says how final
    the figures are: pending (no summary yet), partial, complete, or unavailable; `expectedAt`
    is when the next summary fetch is due (pending or partial), null when none is planned."""
    call_id = parse_uuid(request.match_info["id"])
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        row = await store.get_quality(conn, user, call_id)
        if row is None:
            raise NotFound("No such call")
        alerts = await store.call_alerts(conn, user, call_id)
    if row["state"] is None:
        # Not enrolled: still going (pending), or never answered (nothing to measure).
        state = "pending" if row["call_ended_at"] is None else "unavailable"
    else:
        state = row["state"]
    # A call still going has no fetch planned yet: its first comes first_fetch_after_s after it ends.
    expected = row["job_run_at"] if state in ("pending", "partial") else None
    return web.json_response({
        "callId": str(call_id),
        "state": state,
        "jitter": _ms(row["jitter_ms"]),
        "jitterMax": _ms(row["jitter_max_ms"]),
        "latency": _ms(row["latency_ms"]),
        "rtt": _ms(row["rtt_ms"]),
        "packetLoss": row["packet_loss_pct"],
        "mos": row["mos"],
        "mosEstimated": bool(row["mos_estimated"]),
        "codec": row["codec"],
        "edge": row["edge"],
        "tags": list(row["tags"] or []),
        "fetchedAt": iso(row["fetched_at"]),
        "expectedAt": iso(expected),
        "alerts": [alert_json(a) for a in alerts],
    })
