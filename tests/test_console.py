"""The console page at `/`: in a real headless Chromium, and over plain HTTP."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from commpro.auth import mint_token
from commpro.jobs import run_due
from commpro.quality.poller import VOICE_INSIGHTS
from tests.browser import open_browser
from tests.conftest import new_user

SECRET_TEXT = "console secret 7731"


@pytest.fixture
async def demo(start_service):
    """A development service whose demo user (one of its own) has two numbers."""
    user = new_user()
    service = await start_service(COMMPRO_SANDBOX_DEMO_USER=user)
    numbers = [await service.add_number(user, identity=user), await service.add_number(user, identity=user)]
    return service, user, numbers


async def _fill(page, form: str, **values: str) -> None:
    """Set the form's fields as a person types them, then submit it."""
    for name, value in values.items():
        await page.eval(f"document.querySelector('#{form} [name={name}]').value = {value!r}")
    await page.eval(f"document.querySelector('#{form} button[type=submit]').click()")


async def test_console_sends_an_sms_and_shows_events_live(demo, tmp_path):
    service, user, (mine, other) = demo
    async with open_browser(tmp_path) as page:
        await page.goto(service.url + "/")
        assert "sandbox" in await page.wait_for("#status td[data-field=twilio]")
        token = (await page.wait_for("#demo-token")).strip()
        assert jwt.decode(token, service.config.auth.jwt_secret, algorithms=["HS256"])["sub"] == user
        assert mine in await page.wait_for("#demo-numbers")
        await page.wait_for("#events-state", "connected")

        # An SMS through the form: its states arrive on the live panel, up to delivered.
        await _fill(page, "sms-form", to="+33612345678", body="hello from the console")
        result = await page.wait_for("#result", "201")
        assert '"status": "queued"' in result
        row = await page.wait_for("#objects li[data-kind=message]", "delivered")
        assert "sent" in row

        # An MMS through the form, with the built-in picture: sent as multipart, delivered too.
        await page.eval("document.getElementById('result').textContent = ''")
        await _fill(page, "mms-form", to="+33612345679", body="a picture")
        assert '"status": "queued"' in await page.wait_for("#result", "201")
        await page.wait_for("#objects li[data-kind=message]:first-child", "delivered")

        # An inbound SMS through the signed webhook: message.received in the live panel.
        await _fill(page, "inbound-form", kind="sms", to=other, body=SECRET_TEXT)
        assert "message.received" in await page.wait_for("#event-log li[data-type='message.received']")
        await page.wait_for("#objects li[data-kind=message]", "received")
        await page.screenshot(tmp_path / "console.png")
    async with service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT direction, num_media FROM messages WHERE user_id = $1 ORDER BY created_at", user)
    assert [(r["direction"], r["num_media"]) for r in rows] == [("outbound", 0), ("outbound", 1), ("inbound", 0)]


async def test_console_places_a_call_and_charts_its_quality(demo, tmp_path):
    service, _, (mine, _) = demo
    async with open_browser(tmp_path) as page:
        await page.goto(service.url + "/")
        await page.wait_for("#events-state", "connected")
        await page.eval(f"document.querySelector('#call-form [name=from]').value = {mine!r}")
        await _fill(page, "call-form", to="+33612345678")
        await page.wait_for("#result", "201")
        row = await page.wait_for("#objects li[data-kind=call]", "completed")
        assert "ringing" in row and "in-progress" in row
        await service.sandbox_idle()
        await page.eval("document.getElementById('quality-refresh').click()")
        await page.wait_for("#quality-table tr[data-quality=pending]", "pending (expected ")
        # One round of the poller, as if its time had come; the summaries are immediate in tests.
        assert await run_due(service.app, VOICE_INSIGHTS, datetime.now(UTC) + timedelta(hours=1)) >= 1
        await page.eval("document.getElementById('quality-refresh').click()")
        await page.wait_for("#quality-table tr[data-quality=complete]")
        bars = await page.eval("document.querySelectorAll('#quality-chart svg rect title').length")
        assert bars >= 2, await page.eval("document.getElementById('quality-panel').innerText")


async def test_production_page_has_no_sandbox_panel_and_no_token(start_service, empty_database_url, tmp_path):
    service = await start_service(
        DATABASE_URL=empty_database_url, COMMPRO_ENV="production", JWT_SECRET="j" * 48,
        COMMPRO_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(), TWILIO_ACCOUNT_SID="AC" + "1" * 32,
        TWILIO_AUTH_TOKEN="2" * 32, PUBLIC_BASE_URL="https://commpro.example.com")
    async with open_browser(tmp_path) as page:
        await page.goto(service.url + "/")
        assert "live" in await page.wait_for("#status td[data-field=twilio]")
        await page.wait_for("#endpoints", "/api/calls/initiate")
        html = await page.eval("document.documentElement.outerHTML")
        panels = await page.eval("[...document.querySelectorAll('section')].map((s) => s.id)")
    assert panels == ["status-panel", "endpoints-panel"]
    assert "eyJ" not in html and "demo-token" not in html and "/console/simulate" not in html
    for secret in ("j" * 48, "2" * 32, service.config.crypto.master_key, "/_sandbox/simulate"):
        assert secret not in html
    # The development routes behind the panels do not exist either, even with a valid token.
    resp = await service.client.post("/console/simulate/sms", json={"from": "+33612345678", "to": "+33612345679"},
                                     headers={"Authorization": f"Bearer {mint_token(service.config, 'demo')}"})
    assert resp.status == 404


async def test_page_is_public_and_lists_the_router(service):
    resp = await service.client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-store"
    page = await resp.text()
    for path in ("/api/messages/send", "/api/events", "/metrics", "/openapi.json", "/console/simulate/{kind}"):
        assert path in page
    # Only "/" itself is public: a look-alike path still needs a token.
    assert (await service.client.get("/index.html")).status in (401, 404)


async def test_simulate_route_needs_a_token_and_a_number_of_yours(demo, logs):
    service, user, (mine, _) = demo
    path = service.app.router["console_simulate"].url_for(kind="sms").path
    body = {"from": "+33612345678", "to": mine, "body": SECRET_TEXT}
    assert (await service.client.post(path, json=body)).status == 401
    resp = await service.client.post(path, json=body, headers=service.auth(new_user()))
    assert resp.status == 403 and (await resp.json())["error"]["details"] == {"to": "not yours"}
    resp = await service.client.post(path, json={**body, "to": "0612"}, headers=service.auth(user))
    assert resp.status == 400 and "to" in (await resp.json())["error"]["details"]
    resp = await service.client.post(path, json={**body, "extra": 1}, headers=service.auth(user))
    assert resp.status == 400
    resp = await service.client.post(path, data="nope", headers={**service.auth(user), "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await service.client.post(path, json=body, headers=service.auth(user))
    assert resp.status == 200 and (await resp.json())["webhook"]["status"] == 200
    call = service.app.router["console_simulate"].url_for(kind="call").path
    resp = await service.client.post(call, json={"from": "+33612345678", "to": mine}, headers=service.auth(user))
    assert resp.status == 200 and (await resp.json())["callSid"].startswith("CA")
    await service.sandbox_idle()
    # The sandbox's credentials never reach the caller nor the logs; the body neither.
    text = logs.getvalue()
    assert service.config.twilio.auth_token not in text and SECRET_TEXT not in text
