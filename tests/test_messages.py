"""The Messaging API end to end: the real twilio client, the sandbox, signed webhooks."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commpro.messages.sms import GSM_CHARACTERS, encoding_and_segments, encoding_of, estimate, opt_keyword
from tests.conftest import new_user

PEER = "+447911123456"


@pytest.fixture
async def owner(service):
    user = new_user()
    return user, await service.add_number(user)


async def send(service, user, from_, to=PEER, body="Bonjour", headers=None):
    return await service.client.post("/api/messages/send", json={"from": from_, "to": to, "body": body},
                                     headers={**service.auth(user), **(headers or {})})


async def inbound(service, from_, to, body="Salut", **extra):
    params = {"MessageSid": extra.pop("MessageSid", None) or "SM" + uuid.uuid4().hex,
              "AccountSid": service.config.twilio.account_sid, "From": from_, "To": to, "Body": body,
              "NumMedia": "0", **extra}
    resp = await service.webhook("/webhook/sms", params)
    assert resp.status == 200 and resp.content_type == "text/xml"
    return params["MessageSid"]


async def conversations(service, user) -> list[dict]:
    resp = await service.client.get("/api/messages/conversations", headers=service.auth(user))
    assert resp.status == 200
    return (await resp.json())["conversations"]


async def conversation(service, user, contact_id) -> dict:
    resp = await service.client.get(f"/api/messages/conversations/{contact_id}", headers=service.auth(user))
    assert resp.status == 200
    return await resp.json()


@pytest.mark.parametrize("body, encoding, segments", [
    ("a" * 160, "GSM-7", 1), ("a" * 161, "GSM-7", 2), ("a" * 306, "GSM-7", 2), ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1), ("€" * 81, "GSM-7", 2), ("Ça va ? à bientôt", "UCS-2", 1),
    ("é" * 160, "GSM-7", 1), ("ê" * 70, "UCS-2", 1), ("ê" * 71, "UCS-2", 2), ("👍" * 35, "UCS-2", 1),
    ("👍" * 36, "UCS-2", 2),
])
def test_encoding_and_segments(body, encoding, segments):
    assert encoding_and_segments(body) == (encoding, segments)


# GSM characters (both sets, \r\n among them), and others that combine into graphemes with them:
# a combining accent, a variation selector, a zero-width joiner, an emoji, a regional indicator.
BODY_CHARACTERS = st.sampled_from(sorted(GSM_CHARACTERS) + ["\u0301", "\ufe0f", "\u200d", "👍", "🇫", "ê", "\u00a0"])


@given(st.lists(BODY_CHARACTERS, max_size=40).map("".join))
def test_an_inbound_bodys_encoding_is_the_estimates(body):
    assert encoding_of(body) == estimate(body).encoding


def test_opt_keywords():
    assert opt_keyword(" stop ", None) == "stop" and opt_keyword("Unsubscribe", None) == "stop"
    assert opt_keyword("START", None) == "start" and opt_keyword("help", None) == "help"
    assert opt_keyword("stop the music", None) is None
    assert opt_keyword("arrête", "STOP") == "stop"


async def test_send_sms_is_delivered_and_listed(service, owner):
    user, number = owner
    resp = await send(service, user, number, body="Bonjour, à bientôt")
    assert resp.status == 201
    sent = await resp.json()
    assert sent["status"] == "queued" and sent["sid"].startswith("SM")
    assert uuid.UUID(sent["messageId"]).version == 7  # time-ordered (commpro/ids.py)
    assert (sent["segments"], sent["encoding"]) == (1, "UCS-2")
    await service.sandbox_idle()
    [conv] = await conversations(service, user)
    assert conv["phoneNumber"] == PEER and conv["unreadCount"] == 0
    last = conv["lastMessage"]
    assert (last["id"], last["body"], last["direction"], last["status"], last["mediaCount"]) == (
        sent["messageId"], "Bonjour, à bientôt", "outbound", "delivered", 0)
    detail = await conversation(service, user, conv["contactId"])
    [message] = detail["messages"]
    assert (message["from"], message["to"], message["body"], message["content"]) == (
        number, PEER, "Bonjour, à bientôt", "available")
    assert detail["contact"]["phoneNumber"] == PEER


@pytest.mark.parametrize("body, field", [
    ({"from": "+33612345678", "to": PEER}, "body"),
    ({"from": "+33612345678", "to": PEER, "body": ""}, "body"),
    ({"from": "+33612345678", "to": PEER, "body": "x" * 1601}, "body"),
    ({"from": "+33612345678", "to": "12", "body": "hi"}, "to"),
    ({"from": "nope", "to": PEER, "body": "hi"}, "from"),
    ({"from": "+33612345678", "to": PEER, "body": 5}, "body"),
    ({"from": "+33612345678", "to": PEER, "body": "hi", "cc": PEER}, "cc"),
])
async def test_send_bad_input(service, body, field):
    resp = await service.client.post("/api/messages/send", json=body, headers=service.auth())
    assert resp.status == 400 and field in (await resp.json())["error"]["details"]


async def test_send_from_a_number_not_yours_is_403(service, owner):
    _, number = owner
    assert (await send(service, new_user(), number)).status == 403


@pytest.mark.parametrize("to, code", [("+15005550001", 21211), ("+15005550002", 21612), ("+15005550009", 21614)])
async def test_twilio_refusals_are_422_and_the_message_fails(service, owner, to, code):
    user, number = owner
    resp = await send(service, user, number, to=to)
    assert resp.status == 422 and (await resp.json())["error"]["details"] == {"twilioCode": code}
    [conv] = await conversations(service, user)
    assert conv["lastMessage"]["status"] == "failed"


async def test_21610_marks_the_contact_opted_out_and_then_409_without_twilio(service, owner):
    user, number = owner
    resp = await send(service, user, number, to="+15005550004")
    assert resp.status == 422
    before = len(await service.sandbox.messages_from(number))
    resp = await send(service, user, number, to="+15005550004")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    assert len(await service.sandbox.messages_from(number)) == before
    [conv] = await conversations(service, user)
    assert conv["optedOut"] is True


async def test_stop_start_and_help(service, owner):
    user, number = owner
    await inbound(service, PEER, number, "STOP")
    assert (await send(service, user, number)).status == 409
    await inbound(service, PEER, number, "HELP")
    assert (await send(service, user, number)).status == 409
    await inbound(service, PEER, number, "start")
    assert (await send(service, user, number)).status == 201
    await inbound(service, PEER, number, "arrête", OptOutType="STOP")
    assert (await send(service, user, number)).status == 409
    await service.sandbox_idle()


async def test_idempotency_and_rate_limit(start_service):
    service = await start_service(COMMPRO_MESSAGES_RATE_PER_MINUTE="2")
    user = new_user()
    number = await service.add_number(user)
    key = {"Idempotency-Key": "once"}
    first, again = [await send(service, user, number, headers=key) for _ in range(2)]
    assert first.status == again.status == 201 and await first.json() == await again.json()
    assert len(await service.sandbox.messages_from(number)) == 1
    assert (await send(service, user, number, body="other", headers=key)).status == 422
    assert (await send(service, user, number)).status == 201
    limited = await send(service, user, number)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    await service.sandbox_idle()


async def test_identical_inbound_webhooks_store_one_message(service, owner):
    user, number = owner
    sid = "SM" + "9" * 32
    await asyncio.gather(*[inbound(service, PEER, number, "once only", MessageSid=sid) for _ in range(8)])
    [conv] = await conversations(service, user)
    assert conv["unreadCount"] == 1
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    assert uuid.UUID(message["id"]).version == 7


async def test_unknown_number_gets_empty_twiml_and_nothing_is_stored(service, logs):
    await inbound(service, PEER, "+447911000000")
    assert any(r["event"] == "sms_to_unknown_number" for r in logs.records())


async def test_unread_counts_across_reads_and_new_messages(service, owner):
    user, number = owner
    for text in ("one", "two", "three"):
        await inbound(service, PEER, number, text)
    [conv] = await conversations(service, user)
    assert conv["unreadCount"] == 3 and conv["lastMessage"]["body"] == "three"
    messages = (await conversation(service, user, conv["contactId"]))["messages"]
    target = messages[-1]["id"]
    first = await (await service.client.put(f"/api/messages/{target}/read", headers=service.auth(user))).json()
    again = await (await service.client.put(f"/api/messages/{target}/read", headers=service.auth(user))).json()
    assert first == again and first["readAt"]
    assert (await conversations(service, user))[0]["unreadCount"] == 2
    assert (await send(service, user, number, body="reply")).status == 201
    assert (await conversations(service, user))[0]["unreadCount"] == 2
    resp = await service.client.put(f"/api/messages/conversations/{conv['contactId']}/read", headers=service.auth(user))
    assert resp.status == 200 and (await conversations(service, user))[0]["unreadCount"] == 0
    await inbound(service, PEER, number, "four")
    assert (await conversations(service, user))[0]["unreadCount"] == 1
    await service.sandbox_idle()


async def test_status_callbacks_only_move_forward(service, owner):
    user, number = owner
    sent = await (await send(service, user, number)).json()
    await service.sandbox_idle()
    path = f"/webhook/status?messageId={sent['messageId']}"
    for status in ("sent", "queued", "sending", "sent"):
        resp = await service.webhook(path, {"MessageSid": sent["sid"], "MessageStatus": status})
        assert resp.status == 204
    [conv] = await conversations(service, user)
    assert conv["lastMessage"]["status"] == "delivered"
    resp = await service.webhook("/webhook/status", {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"})
    assert resp.status == 204
    resp = await service.webhook("/webhook/status", {"MessageSid": sent["sid"], "MessageStatus": "teleported"})
    assert resp.status == 400


async def test_a_failed_delivery_keeps_its_error_code(service, owner):
    user, number = owner
    resp = await send(service, user, number)
    sent = await resp.json()
    await service.webhook(f"/webhook/status?messageId={sent['messageId']}",
                          {"MessageSid": sent["sid"], "MessageStatus": "undelivered", "ErrorCode": "30005"})
    await service.sandbox_idle()
    [conv] = await conversations(service, user)
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    assert (message["status"], message["errorCode"]) == ("undelivered", 30005)


async def test_conversation_pagination(service, owner):
    user, number = owner
    peers = [f"+4479111234{i:02d}" for i in range(5)]
    for peer in peers:
        await inbound(service, peer, number, f"from {peer}")
    resp = await service.client.get("/api/messages/conversations?limit=2", headers=service.auth(user))
    page = await resp.json()
    assert [c["phoneNumber"] for c in page["conversations"]] == peers[::-1][:2]
    resp = await service.client.get(f"/api/messages/conversations?limit=2&cursor={page['nextCursor']}",
                                    headers=service.auth(user))
    assert [c["phoneNumber"] for c in (await resp.json())["conversations"]] == peers[::-1][2:4]
    contact = page["conversations"][0]["contactId"]
    for i in range(3):
        await inbound(service, peers[-1], number, f"more {i}")
    resp = await service.client.get(f"/api/messages/conversations/{contact}?limit=2", headers=service.auth(user))
    first = await resp.json()
    assert [m["body"] for m in first["messages"]] == ["more 2", "more 1"]
    resp = await service.client.get(f"/api/messages/conversations/{contact}?limit=2&before={first['nextCursor']}",
                                    headers=service.auth(user))
    assert [m["body"] for m in (await resp.json())["messages"]] == ["more 0", f"from {peers[-1]}"]
    for query in ("limit=0", "cursor=zzz", "limit=abc"):
        resp = await service.client.get(f"/api/messages/conversations?{query}", headers=service.auth(user))
        assert resp.status == 400


async def test_user_isolation(service, owner):
    user, number = owner
    await inbound(service, PEER, number, "private")
    [conv] = await conversations(service, user)
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    bob_user = new_user()
    bob = service.auth(bob_user)
    assert await conversations(service, bob_user) == []
    for method, path in [
        ("GET", f"/api/messages/conversations/{conv['contactId']}"),
        ("PUT", f"/api/messages/conversations/{conv['contactId']}/read"),
        ("PUT", f"/api/messages/{message['id']}/read"),
        ("GET", f"/api/messages/{message['id']}/media/{conv['contactId']}"),
    ]:
        resp = await service.client.request(method, path, headers=bob)
        assert resp.status == 404, path
    assert (await conversations(service, user))[0]["unreadCount"] == 1
