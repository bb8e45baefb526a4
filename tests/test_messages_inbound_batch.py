"""A batch of inbound messages (sql/0013_inbound_sms_batches.sql, one statement) does what the
same messages do one by one (inbound_store.insert_inbound_sms): the contacts with their opt-outs,
the messages, conversations, jobs, media, erasures and events come out alike, and each item's
outcome is the same; the events follow the batch's order, numbered without a gap."""

from __future__ import annotations

import uuid

from commpro.appkeys import keyring_key
from commpro.messages import inbound_store
from commpro.messages.content import seal
from tests.conftest import new_user

JOBS = inbound_store.Jobs("messages-prices", 60, "media-fetch")
P1, P2, P3, P4 = "+447700900001", "+447700900002", "+447700900003", "+447700900004"
# (k, from, opted out, media): P2 is blocked beforehand; P3 says STOP then START; k=5 twice in the
# batch; k=6 stored before the batch; k=7 an MMS; k=8 names a number its user does not own.
ITEMS = [(0, P1, None, 0), (1, P1, None, 0), (2, P2, None, 0), (3, P3, True, 0), (4, P3, False, 0), (5, P4, None, 0),
         (5, P4, None, 0), (6, P1, None, 0), (7, P4, None, 2), (8, P1, None, 0)]
STORED_BEFORE, NOT_OWNED = 6, 8


async def _setup(service, conn):
    """A user with a number, a blocked contact and a key; the sms(k, ...) that user receives."""
    user = new_user()
    number = await service.add_number(user)
    number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
    await conn.execute("INSERT INTO contacts (user_id, phone_number, blocked) VALUES ($1, $2, true)", user, P2)
    key = await service.app[keyring_key].data_key(conn, user, create=True)
    run = uuid.uuid4().hex[:8]

    def sms(k: int, peer: str, opted_out: bool | None, media: int) -> inbound_store.InboundSms:
        owner = new_user() if k == NOT_OWNED else user
        message_id = uuid.uuid4()
        pending = [inbound_store.PendingMedia(uuid.uuid4(), f"ME{run}{k:02d}{i}", "image/png",
                                              f"https://api.twilio.com/x/Media/ME{run}{k:02d}{i}", i)
                   for i in range(media)]
        return inbound_store.InboundSms(
            message_id, owner, number_id, f"SM{run}{k:02d}", peer, number,
            seal(key, "body", owner, message_id, b"x"), 1, "GSM-7", media, opted_out, pending, JOBS, erase=True)

    return user, sms


STATE = {
    "contacts": "SELECT phone_number, opted_out, opted_out_at IS NOT NULL AS at, blocked FROM contacts "
                "WHERE user_id = $1 ORDER BY phone_number",
    "messages": "SELECT right(m.sid, 2) AS k, c.phone_number, m.read_at IS NOT NULL AS read, m.status, m.num_media "
                "FROM messages m JOIN contacts c ON c.id = m.contact_id WHERE m.user_id = $1 ORDER BY m.sid",
    "conversations": "SELECT c.phone_number, v.unread_count, right(m.sid, 2) AS last FROM conversations v "
                     "JOIN contacts c ON c.id = v.contact_id JOIN messages m ON m.id = v.last_message_id "
                     "WHERE v.user_id = $1 ORDER BY c.phone_number",
    "jobs": "SELECT j.kind, count(*) FROM jobs j WHERE j.key IN (SELECT id::text FROM messages WHERE user_id = $1 "
            "UNION SELECT id::text FROM message_media WHERE user_id = $1 UNION SELECT sid FROM messages "
            "WHERE user_id = $1) GROUP BY j.kind ORDER BY j.kind",
    "media": "SELECT right(m.sid, 2) AS k, mm.position, mm.fetch_state FROM message_media mm "
             "JOIN messages m ON m.id = mm.message_id WHERE mm.user_id = $1 ORDER BY m.sid, mm.position",
    "erasures": "SELECT right(message_sid, 2) AS k, reason FROM twilio_erasures WHERE user_id = $1 ORDER BY 1",
    "events": "SELECT e.seq, e.type, right(m.sid, 2) AS k, (e.payload->>'numMedia')::int AS media, "
              "e.payload->>'contactId' = m.contact_id::text AS contact FROM events e "
              "JOIN messages m ON m.id = (e.payload->>'messageId')::uuid WHERE e.user_id = $1 ORDER BY e.seq",
}


async def state(conn, user: str) -> dict[str, list[dict]]:
    return {name: [dict(r) for r in await conn.fetch(sql, user)] for name, sql in STATE.items()}


def outcome(row) -> tuple | None:
    return None if row is None else (row["inserted"], row["blocked"], row["contact_id"] is not None)


async def test_a_batch_does_what_its_messages_do_one_by_one(service):
    async with service.pool.acquire() as conn:
        batch_user, batch_sms = await _setup(service, conn)
        alone_user, alone_sms = await _setup(service, conn)
        for sms in (batch_sms, alone_sms):
            assert await inbound_store.insert_inbound_sms(conn, sms(STORED_BEFORE, P1, None, 0)) is not None
        batch = [batch_sms(*item) for item in ITEMS]
        async with conn.transaction():
            batched = await inbound_store.insert_inbound_batch(conn, batch)
        # One by one, in the order the batch locks its rows in (owner, contact, MessageSid).
        alone = [alone_sms(*item) for item in ITEMS]
        rows = {}
        for n in sorted(range(len(alone)), key=lambda n: (alone[n].user_id, alone[n].from_number, alone[n].sid)):
            rows[n] = await inbound_store.insert_inbound_sms(conn, alone[n])
        assert [outcome(r) for r in batched] == [outcome(rows[n]) for n in range(len(alone))]
        assert batched[ITEMS.index((NOT_OWNED, P1, None, 0))] is None
        assert [outcome(batched[n]) for n in (5, 6, 7)] == [(True, False, True), (False, False, True),
                                                            (False, False, True)]
        assert outcome(batched[2]) == (True, True, True)  # the blocked contact's
        # Again, all stored now: nothing changes, and there is no event to publish.
        async with conn.transaction():
            again = await inbound_store.insert_inbound_batch(conn, [batch_sms(*item) for item in ITEMS[:3]])
        assert [outcome(r) for r in again] == [(False, False, True), (False, False, True), (False, True, True)]
        batch_state, alone_state = await state(conn, batch_user), await state(conn, alone_user)
    events = batch_state.pop("events")
    alone_events = alone_state.pop("events")
    assert batch_state == alone_state
    assert batch_state["contacts"][2] == {"phone_number": P3, "opted_out": False, "at": False, "blocked": False}
    assert {e["k"] for e in events} == {e["k"] for e in alone_events} == {"00", "01", "03", "04", "05", "06", "07"}
    # The batch's events: numbered on from the one stored before, in the batch's order.
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert [e["k"] for e in events] == ["06", "00", "01", "03", "04", "05", "07"]
    assert all(e["contact"] and e["type"] == "message.received" for e in events)
    assert [e["media"] for e in events if e["k"] == "07"] == [2]
    assert len(batch_state["media"]) == 2 and {"07"} == {m["k"] for m in batch_state["media"]}
    assert "07" not in {e["k"] for e in batch_state["erasures"]}  # its media to fetch first
