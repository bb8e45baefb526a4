"""GET /api/calls/{id}/quality and GET /api/calls/alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from commpro.appkeys import pool_key
from commpro.auth import user_id
from commpro.errors import NotFound
from commpro.quality import store
from commpro.validation import Fields, decode_cursor, encode_cursor, parse_uuid

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
    before = None
    if "cursor" in request.query:
        parts = decode_cursor(request.query["cursor"])
        try:
            before = datetime.fromisoformat(parts[0]), uuid.UUID(parts[1])
        except (IndexError, TypeError, ValueError):
            fields.errors["cursor"] = "is not a cursor this service gave out"
    fields.check()
    async with request.config_dict[pool_key].acquire() as conn:
        rows = await store.list_alerts(conn, user_id(request), since, before, limit)
    next_cursor = encode_cursor(rows[-1]["created_at"].isoformat(), str(rows[-1]["id"])) if len(rows) == limit else None
    return web.json_response({"alerts": [alert_json(r) for r in rows], "nextCursor": next_cursor})


@routes.get("/api/calls/{id}/quality", name="call_quality")
async def call_quality(request: web.Request) -> web.Response:
    """jitter, latency and rtt in milliseconds, packetLoss in percent; `state` says how final
    the figures are: pending (no summary yet), partial, complete, or unavailable."""
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
        "fetchedAt": row["fetched_at"].isoformat() if row["fetched_at"] else None,
        "alerts": [alert_json(a) for a in alerts],
    })
