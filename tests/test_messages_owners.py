"""The inbound SMS webhook remembers each number's owner (numbers/owners.py) instead of looking
it up per message; the statement checks the remembered owner. A number that changed hands, or
was released, between two messages: the second is stored under the owner of the moment, sealed
with that owner's key, or refused as a message to an unknown number, exactly as without the cache."""

from __future__ import annotations

import asyncio

import pytest

from commpro.appkeys import number_owners_key
from commpro.numbers.owners import NumberOwners, Owner
from commpro.numbers.store import insert_number
from tests.conftest import new_user
from tests.test_inbound_once import EVENTS, count
from tests.test_messages import PEER, conversation, conversations, inbound

NUMBER_ID = "SELECT id FROM phone_numbers WHERE e164 = $1"
MESSAGES = "SELECT count(*) FROM messages WHERE user_id = $1"


async def test_the_owner_is_remembered_after_the_first_message(service):
    user = new_user()
    number = await service.add_number(user)
    owners = service.app[number_owners_key]
    assert owners.get(number) is None
    await inbound(service, PEER, number, "premier")
    assert owners.get(number) == Owner(await count(service, NUMBER_ID, number), user)
    await inbound(service, PEER, number, "second")
    assert await count(service, MESSAGES, user) == 2


async def _give_to(service, number: str, new_owner: str, how: str) -> None:
    async with service.pool.acquire() as conn:
        if how == "same row":
            await conn.execute("UPDATE phone_numbers SET user_id = $2 WHERE e164 = $1", number, new_owner)
        else:  # released, then bought by another user: a new row
            await conn.execute("DELETE FROM phone_numbers WHERE e164 = $1", number)
            await insert_number(conn, new_owner, number)


@pytest.mark.parametrize("how", ["same row", "released then bought"])
async def test_a_number_given_to_another_user_between_two_messages_stores_the_next_ones_under_the_new_owner(
        service, how):
    user, buyer = new_user(), new_user()
    number = await service.add_number(user)
    await inbound(service, PEER, number, "pour l'ancien")
    await _give_to(service, number, buyer, how)
    # Several at once: each finds the remembered owner stale, and each is sealed again.
    await asyncio.gather(*[inbound(service, PEER, number, f"pour le nouveau {i}") for i in range(5)])
    assert await count(service, MESSAGES, user) == 1
    assert await count(service, MESSAGES, buyer) == 5
    assert await count(service, EVENTS, user, "message.received") == 1
    assert await count(service, EVENTS, buyer, "message.received") == 5
    assert service.app[number_owners_key].get(number) == Owner(await count(service, NUMBER_ID, number), buyer)
    [conv] = await conversations(service, buyer)
    assert conv["phoneNumber"] == PEER and conv["unreadCount"] == 5  # the buyer's own contact
    bodies = {m["body"] for m in (await conversation(service, buyer, conv["contactId"]))["messages"]}
    assert bodies == {f"pour le nouveau {i}" for i in range(5)}  # sealed with the buyer's key: readable
    [old] = await conversations(service, user)
    assert [m["body"] for m in (await conversation(service, user, old["contactId"]))["messages"]] == ["pour l'ancien"]


async def test_a_number_released_between_two_messages_refuses_the_next_one_as_before(service, logs):
    user = new_user()
    number = await service.add_number(user)
    await inbound(service, PEER, number, "avant")
    async with service.pool.acquire() as conn:
        await conn.execute("DELETE FROM phone_numbers WHERE e164 = $1", number)
    logs.clear()
    sid = await inbound(service, PEER, number, "après")
    assert await count(service, "SELECT count(*) FROM messages WHERE sid = $1", sid) == 0
    assert await count(service, MESSAGES, user) == 1
    assert [r["message_sid"] for r in logs.records() if r["event"] == "sms_to_unknown_number"] == [sid]
    assert service.app[number_owners_key].get(number) is None


async def test_a_retry_after_the_number_changed_hands_is_answered_as_a_duplicate(service, logs):
    """The message was stored under the owner of its first delivery; Twilio's retry arrives after
    the number moved: nothing is stored twice, and the webhook answers as for any duplicate."""
    user, buyer = new_user(), new_user()
    number = await service.add_number(user)
    sid = await inbound(service, PEER, number, "une fois")
    await _give_to(service, number, buyer, "same row")
    logs.clear()
    await inbound(service, PEER, number, "une fois", MessageSid=sid)
    assert await count(service, "SELECT count(*) FROM messages WHERE sid = $1", sid) == 1
    assert await count(service, MESSAGES, buyer) == 0
    assert [r["duplicate"] for r in logs.records() if r["event"] == "sms_received"] == [True]


async def test_the_remembered_owners_are_bounded(service):
    owners = NumberOwners(max_size=2)
    users = [new_user() for _ in range(3)]
    numbers = [await service.add_number(u) for u in users]
    async with service.pool.acquire() as conn:
        for number in numbers:
            await owners.look_up(conn, number)
        assert await owners.look_up(conn, "+447911000000") is None
    assert owners.get(numbers[0]) is None
    assert [owners.get(n).user_id for n in numbers[1:]] == users[1:]
