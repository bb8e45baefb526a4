"""The sandbox's JSON has the shape Twilio's OpenAPI description gives (tests/oai, MIT, Twilio's).

Every property of each schema must be present, no other property may be, and each value must
validate, with OpenAPI 3.0's `nullable` and Twilio's RFC 2822 dates understood.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from tests.conftest import create_call

SCHEMAS = json.loads((Path(__file__).parent / "oai" / "twilio_schemas.json").read_text())


def _nullable(node):
    """OpenAPI 3.0 `nullable: true` -> JSON Schema's null alternative."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


COMPONENTS = _nullable(SCHEMAS["components"])
formats = FormatChecker()


@formats.checks("date-time-rfc-2822", raises=(TypeError, ValueError))
def _rfc2822(value) -> bool:
    return parsedate_to_datetime(value) is not None


@formats.checks("date-time", raises=(TypeError, ValueError))
def _iso(value) -> bool:
    return datetime.fromisoformat(value) is not None


def assert_matches(name: str, document: dict) -> None:
    schema = SCHEMAS["components"]["schemas"][name]
    assert set(document) == set(schema["properties"]), f"{name}: keys differ from Twilio's"
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": COMPONENTS},
                                     format_checker=formats)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors


async def get_json(service, path: str) -> dict:
    sid, token = service.config.twilio.account_sid, service.config.twilio.auth_token
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.config.twilio.api_base_url}/2010-04-01/Accounts/{sid}{path}",
                               headers={"Authorization": aiohttp.encode_basic_auth(sid, token)}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.mark.parametrize("stage", ["created", "completed"])
async def test_call_json(service, receiver, stage):
    call = await create_call(service, receiver, events=["completed"])
    if stage == "completed":
        await receiver.next("/status")
    assert_matches("api.v2010.account.call", await get_json(service, f"/Calls/{call.sid}.json"))


async def test_message_and_media_json(service):
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    resp = await service.client.post("/_sandbox/simulate/sms", headers={"Authorization": auth}, json={
        "from": "+33612345678", "to": "+15005550006", "body": "pic",
        "media": [{"contentType": "image/gif", "dataBase64": base64.b64encode(b"GIF89a").decode()}]})
    sid = (await resp.json())["messageSid"]
    assert_matches("api.v2010.account.message", await get_json(service, f"/Messages/{sid}.json"))
    media_list = (await get_json(service, f"/Messages/{sid}/Media.json"))["media_list"]
    assert len(media_list) == 1
    assert_matches("api.v2010.account.message.media", media_list[0])
    outbound = await service.twilio.call("messages.create", lambda: service.twilio.client.messages.create_async(
        to="+33612345678", from_="+15005550006", body="hi"))
    assert_matches("api.v2010.account.message", await get_json(service, f"/Messages/{outbound.sid}.json"))


async def test_recording_json(service, receiver):
    receiver.twiml = '<Response><Record action="/recorded"/></Response>'
    await create_call(service, receiver, events=["completed"])
    form = await receiver.next("/recorded")
    assert_matches("api.v2010.account.call.call_recording",
                   await get_json(service, f"/Recordings/{form['RecordingSid']}.json"))


@pytest.mark.parametrize("to", ["+33612345678", "client:alice"])
async def test_insights_summary_json(service, receiver, to):
    call = await create_call(service, receiver, to=to, events=["completed"])
    await receiver.next("/status")
    sid, token = service.config.twilio.account_sid, service.config.twilio.auth_token
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.config.twilio.insights_base_url}/v1/Voice/{call.sid}/Summary",
                               headers={"Authorization": aiohttp.encode_basic_auth(sid, token)}) as resp:
            assert resp.status == 200
            assert_matches("insights.v1.call.summary", await resp.json())


def test_the_checker_can_fail():
    with pytest.raises(AssertionError):
        assert_matches("api.v2010.account.message.media", {"sid": "XX"})
    good = {k: None for k in SCHEMAS["components"]["schemas"]["api.v2010.account.message.media"]["properties"]}
    assert_matches("api.v2010.account.message.media", good)
    with pytest.raises(AssertionError):
        assert_matches("api.v2010.account.message.media", {**good, "sid": "not-a-media-sid"})
    with pytest.raises(AssertionError):
        assert_matches("api.v2010.account.message.media", {**good, "date_created": "yesterday"})
