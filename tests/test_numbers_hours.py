"""Business hours: the schedule in the number's time zone (across DST changes), exceptions,
PATCH and GET /api/numbers, and inbound calls outside hours."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from commpro.numbers import hours
from tests.conftest import fresh_number, new_user

CALLER = "+447911123456"
EVERY_DAY_9_TO_5 = {"timeZone": "Europe/Paris", "weekly": {d: [["09:00", "17:00"]] for d in hours.DAYS}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_schedule_across_the_spring_dst_change():
    schedule = hours.validate(EVERY_DAY_9_TO_5)
    # Saturday 28 March 2026 (CET, UTC+1): closes at 16:00 UTC...
    assert hours.status(schedule, at("2026-03-28T15:59:00+00:00")) == (True, at("2026-03-28T16:00:00+00:00"))
    # ...and on Sunday 29 March (CEST since 01:00 UTC, UTC+2) opens at 09:00 local = 07:00 UTC.
    assert hours.status(schedule, at("2026-03-28T17:00:00+00:00")) == (False, at("2026-03-29T07:00:00+00:00"))
    assert hours.status(schedule, at("2026-03-29T07:30:00+00:00")) == (True, at("2026-03-29T15:00:00+00:00"))


def test_a_schedule_across_the_autumn_dst_change_in_new_york():
    schedule = hours.validate({"timeZone": "America/New_York", "weekly": {"sat": [["22:00", "24:00"]],
                                                                          "sun": [["00:00", "03:00"]]}})
    # Sunday 1 November 2026, 02:00 EDT becomes 01:00 EST: open from Saturday 22:00 EDT (02:00 UTC)
    # without a break at midnight, to Sunday 03:00 EST (08:00 UTC): 6 hours, one of them twice.
    assert hours.status(schedule, at("2026-11-01T03:00:00+00:00")) == (True, at("2026-11-01T08:00:00+00:00"))
    assert hours.status(schedule, at("2026-11-01T01:59:00+00:00")) == (False, at("2026-11-01T02:00:00+00:00"))


def test_exceptions_close_a_day_or_change_its_hours():
    schedule = hours.validate({**EVERY_DAY_9_TO_5, "exceptions": [
        {"date": "2026-12-25", "hours": []}, {"date": "2026-12-24", "hours": [["09:00", "12:00"]]}]})
    assert hours.status(schedule, at("2026-12-24T12:00:00+01:00")) == (False, at("2026-12-26T09:00:00+01:00"))
    assert hours.status(schedule, at("2026-12-24T11:00:00+01:00")) == (True, at("2026-12-24T12:00:00+01:00"))
    assert hours.status(None, at("2026-12-25T12:00:00+00:00")) == (True, None)
    always = hours.validate({"timeZone": "UTC", "weekly": {d: [["00:00", "24:00"]] for d in hours.DAYS}})
    assert hours.status(always, at("2026-06-01T00:00:00+00:00")) == (True, None)
    never = hours.validate({"timeZone": "UTC"})
    assert hours.status(never, at("2026-06-01T00:00:00+00:00")) == (False, None)


@pytest.mark.parametrize("bad", [
    {"timeZone": "Mars/Olympus"}, {"timeZone": "../etc/passwd"}, {"weekly": {}},
    {**EVERY_DAY_9_TO_5, "weekly": {"mon": [["17:00", "09:00"]]}},
    {**EVERY_DAY_9_TO_5, "weekly": {"monday": [["09:00", "17:00"]]}},
    {**EVERY_DAY_9_TO_5, "weekly": {"mon": [["9h", "17h"]]}},
    {**EVERY_DAY_9_TO_5, "exceptions": [{"date": "25/12", "hours": []}]},
    # ISO forms other than YYYY-MM-DD would never match a day, and be silently ignored.
    {**EVERY_DAY_9_TO_5, "exceptions": [{"date": "20261225", "hours": []}]},
    {**EVERY_DAY_9_TO_5, "exceptions": [{"date": "2026-W52-5", "hours": []}]},
    {**EVERY_DAY_9_TO_5, "afterHours": "forward"},
    {**EVERY_DAY_9_TO_5, "afterHours": "party"}, {**EVERY_DAY_9_TO_5, "extra": 1}, [], "9-5",
])
async def test_bad_schedules_are_400(service, bad):
    user = new_user()
    await service.add_number(user)
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"businessHours": bad},
                                      headers=service.auth(user))
    assert resp.status == 400 and "businessHours" in (await resp.json())["error"]["details"]


async def test_patch_and_list_show_open_now_and_when_that_changes(service):
    user = new_user()
    await service.add_number(user)
    [entry] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    assert (entry["businessHours"], entry["open"], entry["openChangesAt"]) == (None, True, None)
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"businessHours": EVERY_DAY_9_TO_5},
                                      headers=service.auth(user))
    body = await resp.json()
    assert resp.status == 200 and body["businessHours"]["timeZone"] == "Europe/Paris"
    expected_open, expected_change = hours.status(hours.validate(EVERY_DAY_9_TO_5), datetime.now(UTC))
    assert body["open"] == expected_open
    assert abs((datetime.fromisoformat(body["openChangesAt"]) - expected_change).total_seconds()) < 1
    resp = await service.client.patch(f"/api/numbers/{entry['id']}", json={"businessHours": None},
                                      headers=service.auth(user))
    assert (await resp.json())["businessHours"] is None


async def closed_number(service, user, **after) -> str:
    number = await service.add_number(user, identity=user, forward_to=fresh_number())
    async with service.pool.acquire() as conn:
        await conn.execute("UPDATE phone_numbers SET business_hours = $2 WHERE e164 = $1", number,
                           hours.validate({"timeZone": "Europe/Paris", **after}))  # never open
    return number


async def test_outside_hours_voicemail_with_the_after_hours_greeting(service):
    user = new_user()
    number = await closed_number(service, user, afterHoursGreeting="Fermé le week-end.")
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [v.tag for v in root] == ["Say", "Record", "Hangup"] and root.find("Say").text == "Fermé le week-end."
    await service.sandbox_idle()
    [call] = (await (await service.client.get("/api/calls", headers=service.auth(user))).json())["calls"]
    assert call["voicemail"] is not None and call["answeredBy"] is None


async def test_outside_hours_reject_or_forward_elsewhere(service):
    user = new_user()
    number = await closed_number(service, user, afterHours="reject")
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert [v.tag for v in root] == ["Reject"]
    other, service_desk = new_user(), fresh_number()
    number = await closed_number(service, other, afterHours="forward", afterHoursForwardTo=service_desk)
    dial = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"]).find("Dial")
    assert [(n.tag, n.text) for n in dial] == [("Number", service_desk)]
    default = ET.fromstring((await service.simulate_call(CALLER, await closed_number(service, new_user())))
                            ["webhook"]["response"])
    assert default.find("Say").text == service.config.voice.after_hours_greeting
    await service.sandbox_idle()


async def test_inside_hours_rings_as_usual(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    async with service.pool.acquire() as conn:
        await conn.execute("UPDATE phone_numbers SET business_hours = $2 WHERE e164 = $1", number,
                           hours.validate({"timeZone": "UTC", "weekly": {d: [["00:00", "24:00"]] for d in hours.DAYS}}))
    root = ET.fromstring((await service.simulate_call(CALLER, number))["webhook"]["response"])
    assert root.find("Dial") is not None
    await service.sandbox_idle()
