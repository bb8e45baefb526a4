"""An app token for every user: the derived identity, registration, and inbound calls ringing it."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import jwt

from commpro.calls.devices import derived_identity
from tests.conftest import fresh_number, new_user

API_SECRET = "an-api-key-secret-of-32-characters-or-more"
APP_ENV = {"TWILIO_API_KEY_SID": "SK" + "1" * 32, "TWILIO_API_KEY_SECRET": API_SECRET,
           "TWILIO_TWIML_APP_SID": "AP" + "2" * 32}
CALLER = "+447911123456"


async def token_of(service, user) -> dict:
    resp = await service.client.get(service.app.router["call_token"].url_for(), headers=service.auth(user))
    assert resp.status == 200, await resp.text()
    return await resp.json()


def test_derived_identities_are_stable_distinct_and_within_twilio_rules():
    ids = ["auth0|5f1c2d", "auth0_5f1c2d", "ü" * 300, "a b", "alice@example.com"]
    derived = [derived_identity(i) for i in ids]
    assert derived == [derived_identity(i) for i in ids]
    assert len(set(derived)) == len(ids)
    for identity in derived:
        assert re.fullmatch(r"[A-Za-z0-9_]{1,121}", identity), identity


async def test_token_for_a_user_with_no_identity_and_no_push_credential(start_service):
    service = await start_service(**APP_ENV)
    user = "auth0|" + new_user()
    body = await token_of(service, user)
    assert body["identity"] == derived_identity(user)
    claims = jwt.decode(body["token"], API_SECRET, algorithms=["HS256"])
    assert claims["grants"]["identity"] == derived_identity(user)
    assert "push_credential_sid" not in claims["grants"]["voice"]
    # Stable: the same identity next time.
    assert (await token_of(service, user))["identity"] == body["identity"]


async def test_explicit_identity_wins(start_service):
    service = await start_service(**APP_ENV)
    user = new_user()
    await service.add_number(user, identity="desk-" + user)
    assert (await token_of(service, user))["identity"] == "desk-" + user


async def test_inbound_rings_the_app_only_once_registered(start_service):
    service = await start_service(**APP_ENV)
    user = new_user()
    number = await service.add_number(user)
    # Nothing to ring yet: straight to voicemail.
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert root.find("Dial") is None and root.find("Record") is not None
    identity = (await token_of(service, user))["identity"]
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [(n.tag, n.text) for n in root.find("Dial")] == [("Client", identity)]
    await service.sandbox_idle()
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT identity FROM app_registrations WHERE user_id = $1", user) == identity


async def test_app_calls_out_from_its_registered_identity(start_service):
    service = await start_service(**APP_ENV)
    user = new_user()
    number = await service.add_number(user)
    identity = (await token_of(service, user))["identity"]
    resp = await service.webhook("/webhook/voice/outbound", {"CallSid": "CA" + "7" * 32,
                                                             "From": f"client:{identity}", "To": CALLER})
    dial = ET.fromstring(await resp.text()).find("Dial")
    assert dial.get("callerId") == number and dial.find("Number").text == CALLER


async def test_identity_of_another_user_is_refused(start_service):
    service = await start_service(**APP_ENV)
    user, other = new_user(), new_user()
    await service.add_number(other, identity="shared-" + user)
    async with service.pool.acquire() as conn:
        # An operator error: the same identity on this user's number too.
        await conn.execute("INSERT INTO phone_numbers (user_id, e164, identity) VALUES ($1, $2, $3)",
                           user, fresh_number(), "shared-" + user)
    resp = await service.client.get("/api/calls/token", headers=service.auth(user))
    assert resp.status == 409


async def test_signing_the_app_out_stops_ringing_it(start_service):
    service = await start_service(**APP_ENV)
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    identity = (await token_of(service, user))["identity"]
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert ("Client", identity) in [(n.tag, n.text) for n in root.find("Dial")]
    url = service.app.router["unregister_app"].url_for()
    for _ in range(2):
        assert (await service.client.delete(url, headers=service.auth(user))).status == 204
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [n.tag for n in root.find("Dial")] == ["Number"]
    assert (await service.client.delete(url)).status == 401
    await service.sandbox_idle()
