"""Contacts end to end: listed, searched by name (encrypted, through its blind index) or number,
named, annotated and blocked; each user sees only their own."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import new_user
from tests.test_messages import conversation, conversations, inbound, send

JEAN, MARIE, PAUL = "+447911123456", "+447911654321", "+33612340000"


@pytest.fixture
async def owner(service):
    user = new_user()
    return user, await service.add_number(user)


async def contacts(service, user, **query) -> dict:
    resp = await service.client.get("/api/contacts", params=query, headers=service.auth(user))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def patch(service, user, contact_id, payload):
    return await service.client.patch(f"/api/contacts/{contact_id}", json=payload, headers=service.auth(user))


async def contact_of(service, user, phone) -> dict:
    [found] = [c for c in (await contacts(service, user))["contacts"] if c["phoneNumber"] == phone]
    return found


async def with_three_contacts(service, user, number) -> dict[str, str]:
    await inbound(service, JEAN, number, body="Salut")
    await inbound(service, MARIE, number, body="Coucou")
    assert (await send(service, user, number, to=PAUL, body="Bonjour Paul")).status == 201
    await service.sandbox_idle()
    listed = (await contacts(service, user))["contacts"]
    return {c["phoneNumber"]: c["id"] for c in listed}


async def test_name_notes_and_search(service, owner):
    user, number = owner
    ids = await with_three_contacts(service, user, number)
    assert set(ids) == {JEAN, MARIE, PAUL}
    resp = await patch(service, user, ids[JEAN], {"name": "  Jean-Édouard Dupont ", "notes": "client depuis 2019"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["name"], body["notes"], body["blocked"], body["phoneNumber"]) == (
        "Jean-Édouard Dupont", "client depuis 2019", False, JEAN)
    assert (await patch(service, user, ids[MARIE], {"name": "Marie Curie"})).status == 200
    found = lambda page: [c["phoneNumber"] for c in page["contacts"]]
    for query in ("jean", "JEAN", "edou", "Édouard", "dupont jean", "dup j", "Jean-Édouard Dupont"):
        assert found(await contacts(service, user, q=query)) == [JEAN], query
    assert found(await contacts(service, user, q="marie")) == [MARIE]
    assert found(await contacts(service, user, q="paul")) == []  # a number, not a name
    assert found(await contacts(service, user, q="jean marie")) == []
    assert found(await contacts(service, user, q="+447911")) == [MARIE, JEAN]
    assert found(await contacts(service, user, q="33 6")) == [PAUL]
    # Clearing the name takes it out of the index too.
    resp = await patch(service, user, ids[MARIE], {"name": None})
    assert (await resp.json())["name"] is None
    assert found(await contacts(service, user, q="marie")) == []
    one = await (await service.client.get(f"/api/contacts/{ids[JEAN]}", headers=service.auth(user))).json()
    assert one["name"] == "Jean-Édouard Dupont" and one["notes"] == "client depuis 2019"


async def test_names_are_encrypted_at_rest(service, owner):
    user, number = owner
    ids = await with_three_contacts(service, user, number)
    assert (await patch(service, user, ids[JEAN], {"name": "Zébulon Quartz", "notes": "code 7741"})).status == 200
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM contacts WHERE id = $1", uuid.UUID(ids[JEAN]))
    dump = repr(dict(row)).encode() + b"".join(v for v in row.values() if isinstance(v, bytes))
    # The notes whole: "7741" alone turns up now and then in a UUID's hex or a timestamp's digits.
    for secret in (b"Z\xc3\xa9bulon", b"Quartz", b"quartz", b"zebulon", b"code 7741"):
        assert secret not in dump
    assert row["name_ciphertext"] and row["name_index"]


async def test_paging_by_cursor(service, owner):
    user, number = owner
    ids = await with_three_contacts(service, user, number)
    seen, cursor = [], None
    while True:
        page = await contacts(service, user, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [c["id"] for c in page["contacts"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids.values()) and len(seen) == 3


async def test_conversations_show_the_name(service, owner):
    user, number = owner
    ids = await with_three_contacts(service, user, number)
    await patch(service, user, ids[JEAN], {"name": "Jean Dupont"})
    names = {c["phoneNumber"]: c["name"] for c in await conversations(service, user)}
    assert names == {JEAN: "Jean Dupont", MARIE: None, PAUL: None}
    detail = await conversation(service, user, ids[JEAN])
    assert detail["contact"]["name"] == "Jean Dupont" and detail["contact"]["blocked"] is False


async def events_of(service, user, type_) -> int:
    async with service.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM events WHERE user_id = $1 AND type = $2", user, type_)


async def test_a_blocked_contacts_messages_are_stored_but_not_unread_and_raise_no_event(service, owner):
    user, number = owner
    await inbound(service, JEAN, number, body="un")
    contact = await contact_of(service, user, JEAN)
    received = await events_of(service, user, "message.received")
    assert (await patch(service, user, contact["id"], {"blocked": True})).status == 200
    await inbound(service, JEAN, number, body="deux")
    await inbound(service, JEAN, number, body="trois")
    [conv] = await conversations(service, user)
    assert conv["unreadCount"] == 1 and conv["blocked"] is True and conv["lastMessage"]["body"] == "trois"
    detail = await conversation(service, user, contact["id"])
    assert [m["body"] for m in detail["messages"]] == ["trois", "deux", "un"]
    assert await events_of(service, user, "message.received") == received
    # Reading everything leaves the count at 0, never below.
    for message in detail["messages"]:
        assert (await service.client.put(f"/api/messages/{message['id']}/read", headers=service.auth(user))).status == 200
    assert (await conversations(service, user))[0]["unreadCount"] == 0
    # Unblocked: messages count and announce themselves again.
    assert (await patch(service, user, contact["id"], {"blocked": False})).status == 200
    await inbound(service, JEAN, number, body="quatre")
    assert (await conversations(service, user))[0]["unreadCount"] == 1
    assert await events_of(service, user, "message.received") == received + 1


async def test_users_are_isolated(service, owner):
    user, number = owner
    ids = await with_three_contacts(service, user, number)
    await patch(service, user, ids[JEAN], {"name": "Jean Dupont"})
    other = new_user()
    other_number = await service.add_number(other)
    await inbound(service, JEAN, other_number, body="autre")
    theirs = (await contacts(service, other))["contacts"]
    assert [c["phoneNumber"] for c in theirs] == [JEAN] and theirs[0]["id"] != ids[JEAN] and theirs[0]["name"] is None
    assert (await contacts(service, other, q="jean"))["contacts"] == []
    assert (await contacts(service, other, q="+4479111654"))["contacts"] == []
    resp = await patch(service, other, ids[JEAN], {"name": "Volé"})
    assert resp.status == 404
    assert (await service.client.get(f"/api/contacts/{ids[JEAN]}", headers=service.auth(other))).status == 404
    assert (await contact_of(service, user, JEAN))["name"] == "Jean Dupont"


@pytest.mark.parametrize("payload, field", [
    ({}, "body"), ({"name": 5}, "name"), ({"name": "   "}, "name"), ({"name": "x" * 101}, "name"),
    ({"notes": "x" * 2001}, "notes"), ({"blocked": "yes"}, "blocked"), ({"blocked": None}, "blocked"),
    ({"phoneNumber": "+33600000000"}, "phoneNumber"),
])
async def test_bad_patches_are_400(service, owner, payload, field):
    user, number = owner
    await inbound(service, JEAN, number)
    contact = await contact_of(service, user, JEAN)
    resp = await patch(service, user, contact["id"], payload)
    assert resp.status == 400 and field in (await resp.json())["error"]["details"]


@pytest.mark.parametrize("query, field", [
    ({"q": "!!!"}, "q"), ({"q": ""}, "q"), ({"limit": "0"}, "limit"), ({"cursor": "nope"}, "cursor"),
    ({"sort": "name"}, "sort"),
])
async def test_bad_queries_are_400(service, query, field):
    resp = await service.client.get("/api/contacts", params=query, headers=service.auth())
    assert resp.status == 400 and field in (await resp.json())["error"]["details"]


async def test_unknown_ids_and_no_token(service):
    assert (await patch(service, new_user(), uuid.uuid4(), {"name": "x"})).status == 404
    assert (await patch(service, new_user(), "not-a-uuid", {"name": "x"})).status == 404
    assert (await service.client.get("/api/contacts")).status == 401
    assert (await service.client.patch(f"/api/contacts/{uuid.uuid4()}", json={"name": "x"})).status == 401
