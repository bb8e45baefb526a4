"""The inbound webhooks as one statement each (messages/inbound_store.py, calls/inbound_store.py):
duplicates arriving at the same moment store one row and publish one event, a user's first
messages create one data key between them, opt-out and erasure ride in the same statement, and
a conversation read meanwhile loses none of them."""

from __future__ import annotations

import asyncio
import uuid

from commpro.appkeys import keyring_key
from commpro.events import store as events
from commpro.messages import inbound_store
from commpro.messages.content import seal
from tests.conftest import WAIT_S, new_user
from tests.test_calls_inbound import CALLER, calls_of
from tests.test_messages import PEER, conversation, conversations, inbound, send


async def count(service, sql: str, *args) -> int:
    async with service.pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


EVENTS = "SELECT count(*) FROM events WHERE user_id = $1 AND type = $2"


async def test_eight_identical_sms_at_once_store_one_message_one_event_one_price_job(service):
    user = new_user()
    number = await service.add_number(user)
    sid = "SM" + uuid.uuid4().hex
    await asyncio.gather(*[inbound(service, PEER, number, "une fois", MessageSid=sid) for _ in range(8)])
    assert await count(service, "SELECT count(*) FROM messages WHERE sid = $1", sid) == 1
    assert await count(service, EVENTS, user, "message.received") == 1
    assert await count(service, "SELECT count(*) FROM jobs WHERE kind = 'messages-prices' AND key = "
                                "(SELECT id::text FROM messages WHERE sid = $1)", sid) == 1
    [conv] = await conversations(service, user)
    assert conv["unreadCount"] == 1 and conv["lastMessage"]["body"] == "une fois"


async def test_eight_identical_mms_at_once_record_each_media_and_its_fetch_job_once(service):
    user = new_user()
    number = await service.add_number(user)
    sid = "SM" + uuid.uuid4().hex
    media = {"NumMedia": "2", "MediaUrl0": f"https://api.twilio.com/x/Media/ME{uuid.uuid4().hex}",
             "MediaContentType0": "image/png", "MediaUrl1": f"https://api.twilio.com/x/Media/ME{uuid.uuid4().hex}",
             "MediaContentType1": "image/jpeg"}
    await asyncio.gather(*[inbound(service, PEER, number, "photos", MessageSid=sid, **media) for _ in range(8)])
    rows = await count(service, "SELECT count(*) FROM message_media mm JOIN messages m ON m.id = mm.message_id "
                                "WHERE m.sid = $1 AND mm.fetch_state IN ('pending', 'done', 'failed')", sid)
    assert rows == 2
    assert await count(service, "SELECT count(*) FROM jobs WHERE kind = 'media-fetch' AND key IN "
                                "(SELECT mm.id::text FROM message_media mm JOIN messages m ON m.id = mm.message_id "
                                "WHERE m.sid = $1)", sid) == 2
    assert await count(service, EVENTS, user, "message.received") == 1
    await service.sandbox_idle()


async def test_eight_identical_inbound_calls_at_once_store_one_call_and_answer_alike(service):
    user = new_user()
    number = await service.add_number(user, identity=user)
    params = {"CallSid": "CA" + uuid.uuid4().hex, "From": CALLER, "To": number}
    responses = await asyncio.gather(*[service.webhook("/webhook/voice", params) for _ in range(8)])
    assert {r.status for r in responses} == {200}
    [call] = await calls_of(service, user)
    # Each duplicate found the call the first one made: every answer rings it by its id.
    texts = [await r.text() for r in responses]
    assert all(call["id"] in text for text in texts)
    assert await count(service, EVENTS, user, "call.created") == 1


async def test_a_call_to_voicemail_at_once_is_in_progress_once(service):
    user = new_user()
    number = await service.add_number(user, routing="voicemail")
    params = {"CallSid": "CA" + uuid.uuid4().hex, "From": CALLER, "To": number}
    responses = await asyncio.gather(*[service.webhook("/webhook/voice", params) for _ in range(8)])
    assert {r.status for r in responses} == {200}
    [call] = await calls_of(service, user)
    assert call["status"] == "in-progress"
    assert await count(service, EVENTS, user, "call.created") == 1
    assert await count(service, EVENTS, user, "call.status") == 1
    # The events are numbered in the order they were made.
    async with service.pool.acquire() as conn:
        types = [r["type"] for r in await conn.fetch("SELECT type FROM events WHERE user_id = $1 ORDER BY seq", user)]
    assert types == ["call.created", "call.status"]


async def test_a_users_first_messages_at_once_share_one_new_key(service, start_service):
    user = new_user()
    number = await service.add_number(user)
    texts = [f"premier {i}" for i in range(8)]
    senders = [f"+4479110000{i:02d}" for i in range(8)]
    await asyncio.gather(*[inbound(service, sender, number, text) for sender, text in zip(senders, texts)])
    assert await count(service, "SELECT count(*) FROM user_keys WHERE user_id = $1", user) == 1
    # Read by another process, with a key cache of its own: every body opens with the one key.
    other = await start_service()
    bodies = []
    for conv in await conversations(other, user):
        bodies += [m["body"] for m in (await conversation(other, user, conv["contactId"]))["messages"]]
    assert sorted(bodies) == sorted(texts)


async def test_a_first_message_saying_stop_creates_the_contact_opted_out(service):
    user = new_user()
    number = await service.add_number(user)
    sid = await inbound(service, PEER, number, "STOP")
    assert (await send(service, user, number)).status == 409
    # Twilio retries the STOP after the user was opted in again: the message is not stored twice,
    # and the retry says STOP again, as the first delivery did.
    await inbound(service, PEER, number, "START")
    assert (await send(service, user, number)).status == 201
    await inbound(service, PEER, number, "STOP", MessageSid=sid)
    assert (await send(service, user, number)).status == 409
    assert await count(service, "SELECT count(*) FROM messages WHERE sid = $1", sid) == 1
    assert await count(service, "SELECT count(*) FROM contacts WHERE user_id = $1 AND opted_out_at IS NOT NULL",
                       user) == 1
    await service.sandbox_idle()


async def test_a_number_given_to_another_user_since_the_lookup_stores_nothing(service):
    """The statement checks that the number looked up just before is still the owner's."""
    user, thief = new_user(), new_user()
    number = await service.add_number(user)
    keyring = service.app[keyring_key]
    message_id, sid = uuid.uuid4(), "SM" + uuid.uuid4().hex
    async with service.pool.acquire() as conn:
        number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
        key = await keyring.data_key(conn, thief, create=True)
        row = await inbound_store.insert_inbound_sms(conn, inbound_store.InboundSms(
            message_id, thief, number_id, sid, PEER, number, seal(key, "body", thief, message_id, b"x"), 1,
            "GSM-7", 0, None, [], inbound_store.Jobs("messages-prices", 60, "media-fetch"), erase=True))
    assert row is None
    assert await count(service, "SELECT count(*) FROM messages WHERE sid = $1", sid) == 0
    assert await count(service, "SELECT count(*) FROM contacts WHERE user_id = $1", thief) == 0


async def test_messages_arriving_while_the_conversation_is_read_are_all_stored(service):
    user = new_user()
    number = await service.add_number(user)
    await inbound(service, PEER, number, "d'abord")
    [conv] = await conversations(service, user)
    url = f"/api/messages/conversations/{conv['contactId']}/read"

    async def read() -> int:
        return (await service.client.put(url, headers=service.auth(user))).status

    results = await asyncio.gather(*[inbound(service, PEER, number, f"m{i}") for i in range(20)],
                                   *[read() for _ in range(20)])
    assert set(results[20:]) == {200}
    assert await count(service, EVENTS, user, "message.received") == 21
    assert len((await conversation(service, user, conv["contactId"]))["messages"]) == 21


async def test_inbound_sms_is_queued_for_erasure_in_the_same_statement(start_service):
    service = await start_service(COMMPRO_MESSAGES_ERASE_AT_TWILIO="true")
    user = new_user()
    number = await service.add_number(user)
    sid = await inbound(service, PEER, number, "à effacer")
    assert await count(service, "SELECT count(*) FROM twilio_erasures WHERE message_sid = $1 AND reason = 'stored'",
                       sid) == 1
    assert await count(service, "SELECT count(*) FROM jobs WHERE kind = 'twilio-erasure' AND key = $1", sid) == 1
    await service.sandbox_idle()


async def test_a_batch_waits_for_a_contact_another_transaction_holds_without_deadlock(service):
    """A request that holds a contact's row and then publishes (PATCH /api/contacts/{id} does)
    meets a batch of inbound messages that needs that row: the batch takes the owner's event
    counter only after all its rows, so one waits for the other, and both commit."""
    user = new_user()
    number = await service.add_number(user)
    first, second = "+4477" + str(uuid.uuid4().int % 10**8).zfill(8), "+4478" + str(uuid.uuid4().int % 10**8).zfill(8)
    await inbound(service, second, number, "pour créer le contact")
    keyring = service.app[keyring_key]
    async with service.pool.acquire() as conn:
        number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
        key = await keyring.data_key(conn, user, create=True)

    def sms(peer: str) -> inbound_store.InboundSms:
        message_id = uuid.uuid4()
        return inbound_store.InboundSms(
            message_id, user, number_id, "SM" + uuid.uuid4().hex, peer, number,
            seal(key, "body", user, message_id, b"x"), 1, "GSM-7", 0, None, [],
            inbound_store.Jobs("messages-prices", 60, "media-fetch"), erase=False)

    holder = await service.pool.acquire()
    batch_conn = await service.pool.acquire()
    holding = holder.transaction()
    try:
        await holding.start()
        await holder.execute("UPDATE contacts SET blocked = blocked WHERE user_id = $1 AND phone_number = $2", user,
                             second)

        async def batch():
            async with batch_conn.transaction():
                return await inbound_store.insert_inbound_batch(batch_conn, [sms(first), sms(second)])

        batching = asyncio.ensure_future(batch())
        waits = ("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1")
        async with asyncio.timeout(WAIT_S):
            while not await service.pool.fetchval(waits, batch_conn.get_server_pid()):
                await asyncio.sleep(0.01)  # the batch is waiting for the contact's row
        await events.publish(holder, user, "contact.updated", {"n": 1})  # the counter is free
        await holding.commit()
        rows = await asyncio.wait_for(batching, WAIT_S)
    finally:
        if not holder.is_closed() and holder.is_in_transaction():
            await holding.rollback()
        await service.pool.release(holder)
        await service.pool.release(batch_conn)
    assert [r["inserted"] for r in rows] == [True, True]
    async with service.pool.acquire() as conn:
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM events WHERE user_id = $1 ORDER BY seq", user)]
    assert types == ["message.received", "contact.updated", "message.received", "message.received"]
