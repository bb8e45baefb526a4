"""The sandbox plays calls at Twilio's pace: each state can be watched, inbound calls show
in-progress, and durationSec agrees with the timestamps."""

from __future__ import annotations

from datetime import datetime

from tests.conftest import fresh_number, new_user
from tests.test_events import next_event

CALLER = "+447911123456"
PACED = {"COMMPRO_SANDBOX_PACE": "1", "COMMPRO_SANDBOX_CALL_DURATION_S": "1",
         "COMMPRO_SANDBOX_ANSWER_AFTER_S": "0.2", "COMMPRO_SANDBOX_RING_AFTER_S": "0.1"}


async def call_of(service, user, call_id) -> dict:
    return await (await service.client.get(f"/api/calls/{call_id}", headers=service.auth(user))).json()


async def inbound_states(ws) -> tuple[list[str], str]:
    """The statuses an inbound call goes through on the event stream, until it completes; each
    in-progress is also what the API says at that moment."""
    seen, call_id = [], None
    while "completed" not in seen:
        event = await next_event(ws)
        if event["type"] in ("call.created", "call.status"):
            seen.append(event["data"]["status"])
            call_id = event["data"]["callId"]
    return seen, call_id


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def test_an_inbound_call_is_seen_in_progress_then_completed(start_service):
    service = await start_service(**PACED)
    user = new_user()
    number = await service.add_number(user, forward_to=fresh_number())
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    await service.simulate_call(CALLER, number)
    seen = []
    while "in-progress" not in seen:
        event = await next_event(ws)
        seen.append(event["data"].get("status"))
    # Observable while it lasts: the API says so too.
    assert (await call_of(service, user, event["data"]["callId"]))["status"] == "in-progress"
    rest, call_id = await inbound_states(ws)
    assert [s for s in seen + rest if s] == ["ringing", "in-progress", "completed"]
    await service.sandbox_idle()
    call = await call_of(service, user, call_id)
    assert call["durationSec"] == 1 and call["answeredBy"] == "phone"
    assert abs(seconds_between(call["answeredAt"], call["endedAt"]) - call["durationSec"]) < 1
    await ws.close()


async def test_an_outbound_call_passes_through_every_state(start_service):
    service = await start_service(**PACED)
    user = new_user()
    number = await service.add_number(user, identity=user)
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    resp = await service.client.post("/api/calls/initiate", json={"from": number, "to": CALLER},
                                     headers=service.auth(user))
    call_id = (await resp.json())["callId"]
    seen = []
    while "completed" not in seen:
        event = await next_event(ws)
        if event["type"] == "call.status":
            seen.append(event["data"]["status"])
    assert seen == ["initiated", "ringing", "in-progress", "completed"]
    await service.sandbox_idle()
    call = await call_of(service, user, call_id)
    assert call["durationSec"] == 1
    assert abs(seconds_between(call["answeredAt"], call["endedAt"]) - call["durationSec"]) < 1
    await ws.close()


async def test_a_voicemail_records_for_its_duration(start_service):
    service = await start_service(**PACED)
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    ws = await service.client.ws_connect("/api/events", headers=service.auth(user))
    await service.simulate_call(CALLER, number)
    seen, _ = await inbound_states(ws)
    assert seen == ["ringing", "in-progress", "completed"]
    await service.sandbox_idle()
    await ws.close()
