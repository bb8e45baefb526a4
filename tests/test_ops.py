"""/healthz, /readyz and the /status dashboard."""

from __future__ import annotations


async def test_healthz_and_readyz(service):
    resp = await service.client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await service.client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ready"}


async def test_readyz_is_503_when_the_database_is_gone(service):
    await service.pool.close()
    resp = await service.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "unavailable"
    resp = await service.client.get("/healthz")
    assert resp.status == 200


async def test_status_is_the_dashboard(service):
    resp = await service.client.get("/status", headers=service.auth())
    assert resp.status == 200
    body = await resp.json()
    assert body["twilio"] == {"mode": "sandbox"}
    assert body["database"]["ok"] is True
    assert body["environment"] == "development" and body["uptimeSec"] >= 0
    endpoints = {(e["method"], e["path"]): e for e in body["endpoints"]}
    assert endpoints[("GET", "/healthz")]["auth"] == "none"
    assert endpoints[("GET", "/status")]["auth"] == "jwt"
    assert endpoints[("POST", "/webhook/sms")]["auth"] == "twilio-signature"
    assert endpoints[("POST", "/_sandbox/api/2010-04-01/Accounts/{account_sid}/Calls.json")]["auth"] == "own"
    assert endpoints[("GET", "/media/{id}")]["auth"] == "signed-url"
    assert endpoints[("GET", "/api/calls/{id}")]["auth"] == "jwt"
    assert all(e["auth"] in ("none", "jwt", "twilio-signature", "own", "signed-url", "metrics-token")
               for e in body["endpoints"])
    tasks = {t["name"] for t in body["backgroundTasks"]}
    assert {"calls-prices", "messages-prices", "media-fetch", "voice-insights", "alert-webhook"} <= tasks
