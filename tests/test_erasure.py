"""Erasure that reaches Twilio: once stored (inbound) or final (outbound), a message's media is
deleted and its body redacted at Twilio, through a durable outbox; `commpro keys shred` queues the
same for everything of a user, and a restarted server carries it out."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import aiohttp

from commpro.jobs import jobs_key, run_due
from commpro.messages.erasure_store import ERASURE_KIND
from commpro.sandbox.state import SandboxMedia, SandboxMessage, new_sid
from tests.conftest import new_user, python_env
from tests.test_messages import PEER, conversation, conversations, inbound, send
from tests.test_messages_crypto import run_cli
from tests.test_messages_media import FAST_FETCH, PNG, wait_for_media

# The loop's own rounds are an hour apart: each test drives rounds itself.
ERASE = {"COMMPRO_MESSAGES_ERASE_AT_TWILIO": "true", "COMMPRO_MESSAGES_ERASE_INTERVAL_S": "3600",
         "COMMPRO_MESSAGES_ERASE_RETRY_FIRST_S": "1"}


async def erasure_row(service, sid: str):
    async with service.pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM twilio_erasures WHERE message_sid = $1", sid)


async def erased(service, sid: str, now: datetime | None = None) -> bool:
    """Run erasure rounds until the row of `sid` is done: the database is shared, so a round
    may claim other tests' rows first."""
    for _ in range(50):
        await run_due(service.app, "twilio-erasure", now=now)
        row = await erasure_row(service, sid)
        if row is not None and row["state"] == "done":
            return True
    return False


async def bodies(service, user) -> list[str]:
    [conv] = await conversations(service, user)
    return [m["body"] for m in (await conversation(service, user, conv["contactId"]))["messages"]]


async def simulate_sms(service, number: str, body: str, media: bytes | None = None) -> str:
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    payload = {"from": PEER, "to": number, "body": body}
    if media is not None:
        payload["media"] = [{"contentType": "image/png", "dataBase64": base64.b64encode(media).decode()}]
    resp = await service.client.post("/_sandbox/simulate/sms", headers={"Authorization": auth}, json=payload)
    assert (await resp.json())["webhook"]["status"] == 200
    return (await resp.json())["messageSid"]


async def test_inbound_sms_is_redacted_at_twilio_once_stored(start_service):
    service = await start_service(**ERASE)
    user = new_user()
    number = await service.add_number(user)
    sid = await simulate_sms(service, number, "mon code secret 1234")
    assert (await erasure_row(service, sid))["reason"] == "stored"
    assert await erased(service, sid)
    held = await service.sandbox.message(sid)
    assert held.body == "" and held.redacted and ("redact", sid) in service.sandbox.erasures
    assert await bodies(service, user) == ["mon code secret 1234"]  # our encrypted copy stays


async def test_inbound_media_is_deleted_at_twilio_only_after_it_is_stored(start_service):
    service = await start_service(**ERASE, **FAST_FETCH)
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(mediaFailures=1)  # the first download fails: nothing erased yet
    sid = await simulate_sms(service, number, "photo", media=PNG)
    media_sid = (await service.sandbox.message(sid)).media[0].sid
    [media] = await wait_for_media(service, user, lambda media: media and media[0]["state"] == "done")
    assert await erased(service, sid)
    assert ("delete-media", media_sid) in service.sandbox.erasures and await service.sandbox.media(media_sid) is None
    held = await service.sandbox.message(sid)
    assert held.body == "" and held.media == []
    resp = await service.client.get(media["url"], headers=service.auth(user))
    assert await resp.read() == PNG  # our copy is intact


async def test_media_we_gave_up_on_stays_at_twilio(start_service):
    service = await start_service(**ERASE, **FAST_FETCH, COMMPRO_MESSAGES_FETCH_ATTEMPTS="1")
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(mediaFailures=1)
    sid = await simulate_sms(service, number, "photo", media=PNG)
    media_sid = (await service.sandbox.message(sid)).media[0].sid
    await wait_for_media(service, user, lambda media: media and media[0]["state"] == "failed")
    assert await erased(service, sid)
    # The body is redacted; the only copy of the media is kept at Twilio (until a shred).
    assert (await service.sandbox.message(sid)).redacted and await service.sandbox.media(media_sid) is not None


async def test_outbound_is_redacted_once_final(start_service):
    service = await start_service(**ERASE)
    user = new_user()
    number = await service.add_number(user)
    resp = await send(service, user, number, body="à effacer chez Twilio")
    sid = (await resp.json())["sid"]
    await service.sandbox_idle()
    assert (await erasure_row(service, sid))["reason"] == "final"
    assert await erased(service, sid)
    held = await service.sandbox.message(sid)
    assert held.redacted and held.status == "delivered"
    assert await bodies(service, user) == ["à effacer chez Twilio"]


async def test_nothing_is_queued_when_erasure_is_off(service):
    assert service.config.messages.erase_at_twilio is False  # development's default
    user = new_user()
    number = await service.add_number(user)
    sid = await inbound(service, PEER, number, body="gardé chez Twilio")
    await send(service, user, number, body="aussi")
    await service.sandbox_idle()
    assert await erasure_row(service, sid) is None
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM twilio_erasures WHERE user_id = $1", user) == 0


async def test_a_message_not_final_at_twilio_is_retried(start_service):
    service = await start_service(**ERASE)
    user = new_user()
    held = SandboxMessage(new_sid("SM"), service.config.twilio.account_sid, "+15005550006", PEER, "en vol",
                          "outbound-api", status="sending")
    await service.sandbox.add_message(held)
    async with service.pool.acquire() as conn:
        await conn.execute("INSERT INTO twilio_erasures (message_sid, user_id, reason) VALUES ($1, $2, 'shred')",
                           held.sid, user)
    async with service.pool.acquire() as conn:
        await conn.execute("INSERT INTO jobs (kind, key) VALUES ('twilio-erasure', $1)", held.sid)
    now = datetime.now(UTC)
    await run_due(service.app, "twilio-erasure", now=now)
    row = await erasure_row(service, held.sid)
    assert (row["state"], row["attempts"]) == ("pending", 1) and "not final" in row["last_error"]
    assert (await service.sandbox.message(held.sid)).body == "en vol"
    held.status = "delivered"
    await service.sandbox.save_message(held)
    assert await erased(service, held.sid, now=now + timedelta(seconds=120))
    assert (await service.sandbox.message(held.sid)).redacted


async def inbound_mms(service, twilio, number: str) -> str:
    """An MMS held at `twilio`'s sandbox, announced to `service` by its signed webhook."""
    held = SandboxMessage(new_sid("MM"), twilio.config.twilio.account_sid, PEER, number, "vue", "inbound",
                          status="received")
    media = SandboxMedia(new_sid("ME"), held.sid, held.account_sid, "image/png", PNG)
    held.media.append(media)
    await twilio.sandbox.add_message(held)  # with its media
    url = f"{twilio.config.twilio.api_base_url}/2010-04-01/Accounts/{held.account_sid}/Messages/{held.sid}/Media/{media.sid}"
    resp = await service.webhook("/webhook/sms", {"MessageSid": held.sid, "From": PEER, "To": number, "Body": "vue",
                                                  "NumMedia": "1", "MediaUrl0": url, "MediaContentType0": "image/png"})
    assert resp.status == 200
    return held.sid


async def test_shred_erases_at_twilio_and_survives_a_restart(start_service, make_config, database_url, tmp_path):
    quiet = {"COMMPRO_MESSAGES_ERASE_INTERVAL_S": "3600"}  # no round of their own but the first
    twilio = await start_service(**quiet)  # plays Twilio for the two instances below
    api = twilio.config.twilio.api_base_url
    first = await start_service(config=make_config(TWILIO_API_BASE_URL=api, **quiet))
    user, other = new_user(), new_user()
    number, other_number = await first.add_number(user), await first.add_number(other)
    sids = [(await (await send(first, user, number, body=f"message {i}")).json())["sid"] for i in range(3)]
    other_sid = (await (await send(first, other, other_number, body="pas moi")).json())["sid"]
    sids.append(await inbound_mms(first, twilio, number))
    media_sid = (await twilio.sandbox.message(sids[-1])).media[0].sid
    await twilio.sandbox_idle()
    env = python_env(DATABASE_URL=database_url, COMMPRO_APP_DATA_DIR=str(tmp_path / "data"))
    code, out, err = await run_cli("keys", "shred", user, "--yes", env=env)
    assert code == 0, err
    assert "queued 4 message(s) for erasure at Twilio" in out
    code, _, err = await run_cli("keys", "erasure", user, env=env)
    assert code == 0 and "0 done, 4 pending" in err
    await first.client.close()  # stopped before it erased anything: the work is in the database
    assert not any([(await twilio.sandbox.message(sid)).redacted for sid in sids])
    second = await start_service(config=make_config(TWILIO_API_BASE_URL=api, **quiet))
    # Its own first round claims the queued erasures: once it is over, none is held by it.
    await second.app[jobs_key].between_rounds(ERASURE_KIND)
    for sid in sids:
        assert await erased(second, sid)
        held = await twilio.sandbox.message(sid)
        assert held.redacted and held.body == ""
    assert await twilio.sandbox.media(media_sid) is None and ("delete-media", media_sid) in twilio.sandbox.erasures
    assert (await twilio.sandbox.message(other_sid)).body == "pas moi"  # nobody else is touched
    code, _, err = await run_cli("keys", "erasure", user, "--wait", env=env)
    assert code == 0 and "4 done, 0 pending, 0 given up" in err and "4/4" in err
    # A second shred has nothing left to do at Twilio, and says the key is gone.
    code, out, err = await run_cli("keys", "shred", user, "--yes", env=env)
    assert code == 1 and "no data key" in err
