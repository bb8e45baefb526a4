"""Call quality through the real client and the sandbox's Voice Insights summaries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web

from commpro.appkeys import jobs_key, twilio_key
from commpro.calls.prices import PRICES
from commpro.jobs import run_due
from commpro.jobs.store import get_job
from commpro.quality.emodel import estimate_mos, mos_from_r, r_factor
from commpro.quality.poller import ALERT_WEBHOOK, VOICE_INSIGHTS
from commpro.sandbox import magic
from tests.conftest import WAIT_S, fresh_number, new_user

CALLER = "+447911123456"
SECRET = "alert-webhook-secret-of-some-length"


@pytest.mark.parametrize("r, mos", [(93.2, 4.41), (80, 4.02), (70, 3.6), (60, 3.1), (50, 2.58), (0, 1.0), (100, 4.5)])
def test_mos_from_r_matches_g107_annex_b(r, mos):
    assert mos_from_r(r) == pytest.approx(mos, abs=0.01)


def test_e_model_impairments():
    # No impairment: G.107's default R of 93.2.
    assert r_factor(-10, 0, 0) == pytest.approx(93.2)
    # Delay: 0.024 d below 177.3 ms, steeper above (Cole & Rosenbluth's fit of G.107).
    assert r_factor(140, 0, 0) == pytest.approx(93.2 - 0.024 * 150)
    assert r_factor(290, 0, 0) == pytest.approx(93.2 - 0.024 * 300 - 0.11 * (300 - 177.3))
    # Loss, G.711 with PLC (Bpl 25.1): 2 % random loss costs 95 * 2 / 27.1.
    assert r_factor(-10, 0, 2) == pytest.approx(93.2 - 95 * 2 / 27.1)
    assert estimate_mos(None, None, None) is None
    assert estimate_mos(40, 2, 0.1) > 4.3
    assert estimate_mos(180, 45, 5.2) < 3.5


async def inbound_call(service, from_=CALLER) -> dict:
    """A call answered on the user's phone: its quality is the carrier's (PSTN) figures."""
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    await service.simulate_call(from_, number)
    await service.sandbox_idle()
    [call] = (await (await service.client.get("/api/calls", headers=service.auth(user))).json())["calls"]
    return {"user": user, **call}


async def quality(service, call) -> dict:
    resp = await service.client.get(f"/api/calls/{call['id']}/quality", headers=service.auth(call["user"]))
    assert resp.status == 200
    return await resp.json()


def soon(**kw) -> datetime:
    return datetime.now(UTC) + timedelta(**kw)


async def poll_round(app, now: datetime) -> int:
    return await run_due(app, VOICE_INSIGHTS, now=now)


async def deliver_round(app, now: datetime) -> int:
    return await run_due(app, ALERT_WEBHOOK, now=now)


@pytest.fixture
async def fast(start_service, empty_database_url):
    # A database of its own: poll_round() with a time in the future claims every due row in it.
    return await start_service(COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0", DATABASE_URL=empty_database_url)


async def test_good_pstn_call(fast):
    call = await inbound_call(fast)
    assert (await quality(fast, call))["state"] == "pending"
    assert await poll_round(fast.app, soon(seconds=1)) >= 1
    q = await quality(fast, call)
    assert (q["state"], q["edge"], q["codec"]) == ("complete", "carrier_edge", "pcmu")
    assert (q["jitter"], q["latency"], q["packetLoss"]) == (2.1, 38.0, 0.1)
    assert q["mosEstimated"] is True and q["mos"] == estimate_mos(38.0, 2.1, 0.1, "pcmu") and q["mos"] > 4
    assert q["alerts"] == [] and q["tags"] == []
    async with fast.pool.acquire() as conn:
        raw = await conn.fetchval("SELECT summary FROM call_quality WHERE call_id = $1::uuid", call["id"])
    assert raw["call_sid"] == call["sid"] and raw["carrier_edge"]["metrics"]["inbound"]["jitter"]["avg"] == 2.1


async def test_poor_pstn_call_raises_each_alert_once(fast, logs):
    call = await inbound_call(fast, from_=magic.POOR_QUALITY)
    await poll_round(fast.app, soon(seconds=1))
    q = await quality(fast, call)
    assert q["mosEstimated"] is True and q["mos"] < 3.5
    kinds = {a["kind"]: a for a in q["alerts"]}
    assert set(kinds) == {"high_jitter", "high_packet_loss", "high_latency", "low_mos"}
    assert (kinds["high_jitter"]["value"], kinds["high_jitter"]["threshold"]) == (45.0, 30.0)
    assert kinds["low_mos"]["source"] == "threshold"
    # Fetched again (say, the complete summary after a partial one): no alert twice.
    async with fast.pool.acquire() as conn:
        await conn.execute("UPDATE call_quality SET state = 'partial' WHERE call_id = $1::uuid", call["id"])
        await conn.execute("UPDATE jobs SET state = 'pending', run_at = now() WHERE kind = $1 AND key = $2",
                           VOICE_INSIGHTS, call["id"])
    assert await poll_round(fast.app, soon(seconds=2)) >= 1
    assert len((await quality(fast, call))["alerts"]) == 4
    warnings = [r for r in logs.records() if r["event"] == "quality_alert" and r["call_id"] == call["id"]]
    assert sorted(w["kind"] for w in warnings) == sorted(kinds) and all(w["level"] == "warning" for w in warnings)


async def test_app_call_with_low_mos(fast):
    user = new_user()
    number = await fast.add_number(user, identity="poor-" + user)
    resp = await fast.client.post("/api/calls/initiate", json={"from": number, "to": CALLER}, headers=fast.auth(user))
    call = {"user": user, "id": (await resp.json())["callId"]}
    await fast.sandbox_idle()
    await poll_round(fast.app, soon(seconds=1))
    q = await quality(fast, call)
    assert (q["edge"], q["mos"], q["mosEstimated"], q["codec"], q["rtt"]) == ("sdk_edge", 2.8, False, "opus", 450.0)
    assert {a["kind"] for a in q["alerts"]} == {"low_mos", "high_rtt"}


async def test_partial_then_complete(start_service, empty_database_url):
    service = await start_service(COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0", COMMPRO_SANDBOX_SUMMARY_COMPLETE_AFTER_S="3600",
                                  DATABASE_URL=empty_database_url)
    call = await inbound_call(service)
    await poll_round(service.app, soon(seconds=1))
    assert (await quality(service, call))["state"] == "partial"
    # Nothing due before complete_after_s.
    assert await poll_round(service.app, soon(minutes=10)) == 0
    await service.sandbox_control(summariesComplete=True)
    # The database is shared with the other tests: their due rows may fill a round, so poll until ours.
    for _ in range(30):
        await poll_round(service.app, soon(seconds=service.config.quality.complete_after_s + 60))
        if (await quality(service, call))["state"] == "complete":
            break
    assert (await quality(service, call))["state"] == "complete"


@pytest.mark.parametrize("error", [404, 429])
async def test_not_yet_and_throttled_then_success(fast, error):
    call = await inbound_call(fast)
    await fast.sandbox_control(summaryErrors=[error])
    assert await poll_round(fast.app, soon(seconds=1)) == 0
    async with fast.pool.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM call_quality WHERE call_id = $1::uuid", call["id"])
        job = await get_job(conn, VOICE_INSIGHTS, call["id"])
    assert (state, job["attempts"]) == ("pending", 1) and job["run_at"] > soon(seconds=30)
    assert await poll_round(fast.app, job["run_at"]) == 1
    assert (await quality(fast, call))["state"] == "complete"


async def test_a_call_without_summary_ends_unavailable(fast):
    call = await inbound_call(fast, from_=magic.NO_SUMMARY)
    when = soon(seconds=1)
    for _ in range(12):
        await poll_round(fast.app, when)
        when += timedelta(hours=1)
    q = await quality(fast, call)
    assert q["state"] == "unavailable" and q["mos"] is None
    assert fast.sandbox.summary_fetches[call["sid"]] <= 8


async def test_alert_webhook_is_signed_and_retried(start_service, aiohttp_server):
    received: asyncio.Queue = asyncio.Queue()
    answers = [500]

    async def hook(request):
        body = await request.read()
        await received.put((dict(request.headers), body))
        return web.Response(status=answers.pop(0) if answers else 204)

    app = web.Application()
    app.router.add_post("/alerts", hook)
    server = await aiohttp_server(app)
    service = await start_service(COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0", ALERT_WEBHOOK_URL=str(server.make_url("/alerts")),
                                  ALERT_WEBHOOK_SECRET=SECRET, COMMPRO_ALERTS_DELIVERY_INTERVAL_S="3600")
    call = await inbound_call(service, from_=magic.POOR_QUALITY)
    await poll_round(service.app, soon(seconds=1))
    # The poller woke the delivery job: four alerts, the first answered 500.
    first = [await asyncio.wait_for(received.get(), WAIT_S) for _ in range(4)]
    for headers, body in first:
        expected = hmac.new(SECRET.encode(), headers["X-CommPro-Timestamp"].encode() + b"." + body, hashlib.sha256)
        assert headers["X-CommPro-Signature"] == "sha256=" + expected.hexdigest()
    payloads = [orjson.loads(b)["alert"] for _, b in first]
    assert {p["kind"] for p in payloads} == {"high_jitter", "high_packet_loss", "high_latency", "low_mos"}
    assert all(p["callId"] == call["id"] and p["userId"] == call["user"] for p in payloads)
    # The refused one is retried later, and only that one.
    await service.app[jobs_key].between_rounds(ALERT_WEBHOOK)
    assert await deliver_round(service.app, soon(seconds=10)) == 1
    retried = orjson.loads((await asyncio.wait_for(received.get(), WAIT_S))[1])["alert"]
    assert retried["id"] == payloads[0]["id"]
    assert await deliver_round(service.app, soon(hours=1)) == 0


async def test_two_instances_fetch_each_summary_and_price_once(start_service, make_config, empty_database_url):
    first = await start_service(config=make_config(DATABASE_URL=empty_database_url,
                                                   COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0"))
    twilio = first.config.twilio
    second = await start_service(config=make_config(
        DATABASE_URL=empty_database_url, COMMPRO_QUALITY_FIRST_FETCH_AFTER_S="0",
        TWILIO_API_BASE_URL=twilio.api_base_url, TWILIO_INSIGHTS_BASE_URL=twilio.insights_base_url))
    assert second.app[twilio_key].client.insights.base_url == twilio.insights_base_url
    calls = [await inbound_call(first) for _ in range(6)]
    stored = await asyncio.gather(poll_round(first.app, soon(seconds=1)), poll_round(second.app, soon(seconds=1)))
    assert sum(stored) == 6
    assert [first.sandbox.summary_fetches[c["sid"]] for c in calls] == [1] * 6
    await first.sandbox_control(pricesNow=True)
    later = soon(hours=1)
    priced = await asyncio.gather(run_due(first.app, PRICES.kind, later), run_due(second.app, PRICES.kind, later))
    assert sum(priced) == 6
    assert [first.sandbox.call_fetches[c["sid"]] for c in calls] == [1] * 6


async def test_quality_and_alerts_endpoints(fast):
    call = await inbound_call(fast, from_=magic.POOR_QUALITY)
    await poll_round(fast.app, soon(seconds=1))
    stranger = fast.auth(new_user())
    resp = await fast.client.get(f"/api/calls/{call['id']}/quality", headers=stranger)
    assert resp.status == 404
    resp = await fast.client.get(f"/api/calls/{uuid.uuid4()}/quality", headers=fast.auth(call["user"]))
    assert resp.status == 404
    resp = await fast.client.get("/api/calls/alerts?limit=3", headers=fast.auth(call["user"]))
    page = await resp.json()
    assert len(page["alerts"]) == 3 and page["nextCursor"]
    resp = await fast.client.get(f"/api/calls/alerts?limit=3&cursor={page['nextCursor']}", headers=fast.auth(call["user"]))
    rest = (await resp.json())["alerts"]
    assert len(rest) == 1 and rest[0]["id"] not in {a["id"] for a in page["alerts"]}
    resp = await fast.client.get("/api/calls/alerts", params={"since": soon(hours=1).isoformat()},
                                 headers=fast.auth(call["user"]))
    assert (await resp.json())["alerts"] == []
    assert (await (await fast.client.get("/api/calls/alerts", headers=stranger)).json())["alerts"] == []
    for query in ("limit=0", "since=yesterday", "cursor=nope", "page=2"):
        resp = await fast.client.get(f"/api/calls/alerts?{query}", headers=fast.auth(call["user"]))
        assert resp.status == 400, query


async def test_unanswered_call_has_no_quality(fast):
    user = new_user()
    number = await fast.add_number(user, forward_to=magic.NO_ANSWER)
    resp = await fast.client.post("/api/calls/initiate", json={"from": number, "to": CALLER}, headers=fast.auth(user))
    call = {"user": user, "id": (await resp.json())["callId"]}
    await fast.sandbox_idle()
    assert (await quality(fast, call))["state"] == "unavailable"


async def test_pending_quality_says_when_it_is_expected(service):
    """Twilio needs minutes: a pending quality says when its first fetch is due, from the call's end."""
    call = await inbound_call(service)
    q = await quality(service, call)
    first = service.config.quality.first_fetch_after_s
    assert q["state"] == "pending"
    expected = datetime.fromisoformat(q["expectedAt"])
    assert expected == datetime.fromisoformat(call["endedAt"]) + timedelta(seconds=first)
    # Once complete, nothing more is expected.
    assert await poll_round(service.app, expected + timedelta(seconds=1)) >= 1
    q = await quality(service, call)
    assert q["state"] == "complete" and q["expectedAt"] is None
