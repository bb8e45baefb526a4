"""GET /api/events: the WebSocket of a user's events."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from commpro.appkeys import config_key, hub_key, pool_key
from commpro.auth import user_id
from commpro.errors import UpgradeRequired
from commpro.events import store
from commpro.validation import Fields

routes = web.RouteTableDef()
REPLAY_BATCH = 500
SLOW_CLIENT_CLOSE = 4008  # application range: "you did not keep up"
RESYNC_CLOSE = 4009  # "this process may have missed events"


def _wire(event_id: int, type_: str, data: dict, at: str) -> str:
    return orjson.dumps({"id": event_id, "type": type_, "data": data, "at": at}).decode()


@routes.get("/api/events", name="events")
async def events(request: web.Request) -> web.WebSocketResponse:
    """Pushes the caller's events as JSON text frames {id, type, data, at}. `id` numbers the
    user's own events in commit order. With ?since=<id>, what came after that id is sent first,
    in order, then the live stream, without gaps or repeats. The JWT is in the Authorization header, or ?token= for browsers."""
    fields = Fields(request.query, allowed=("since", "token"))
    since = fields.integer("since", required=False, low=0, high=2**62)
    fields.check()
    settings = request.config_dict[config_key].events
    user = user_id(request)
    hub = request.config_dict[hub_key]
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s)
    if not ws.can_prepare(request).ok:
        # A plain GET (no Upgrade handshake) would fail in prepare() with a 500.
        raise UpgradeRequired("Open /api/events as a WebSocket")
    # Subscribed, then the lease (its user's events are notified from then on), then the
    # replay: nothing falls between them. Without ?since, the stream starts at the lease.
    sub = hub.subscribe(user)
    try:
        sent_at = time.monotonic()
        async with request.config_dict[pool_key].acquire() as conn:
            start = (await store.lease(conn, [user], settings.listen_lease_s))[user]
        hub.leased([sub], sent_at)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    reader = None
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_drain(ws))
        last = start if since is None else since
        if since is not None:
            async with request.config_dict[pool_key].acquire() as conn:
                while True:
                    rows = await store.events_since(conn, user, last, REPLAY_BATCH)
                    for row in rows:
                        await ws.send_str(_wire(row["id"], row["type"], row["payload"], row["at"]))
                        last = row["id"]
                    if len(rows) < REPLAY_BATCH:
                        break
        overflow = asyncio.create_task(sub.overflowed.wait())
        try:
            while not ws.closed:
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, overflow, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if overflow in done and sub.going_away:
                        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
                    elif overflow in done and sub.resync:
                        await ws.close(code=RESYNC_CLOSE, message=b"events may have been missed: reconnect with ?since")
                    elif overflow in done:
                        await ws.close(code=SLOW_CLIENT_CLOSE, message=b"too slow: reconnect with ?since")
                    break
                event = getter.result()
                if event["id"] <= last:
                    continue  # sent by the replay, or from before the stream began
                if event["id"] > last + 1:
                    # A user's numbers commit in order, so a hole means a notification that
                    # never reached this process: the log has it.
                    async with request.config_dict[pool_key].acquire() as conn:
                        for row in await store.events_between(conn, user, last, event["id"]):
                            await ws.send_str(_wire(row["id"], row["type"], row["payload"], row["at"]))
                await ws.send_str(_wire(event["id"], event["type"], event["data"], event["at"]))
                last = event["id"]
        finally:
            overflow.cancel()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        hub.unsubscribe(sub)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if not ws.closed:
            await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read what the client sends (nothing is expected) so that close frames are seen."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break
