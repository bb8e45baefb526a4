"""Messaging as Twilio behaves: its segment count is the truth and the local one a calculator-exact
preview, every status of its enum in any order, ErrorMessage, shared-key webhook signatures, and
media redirected to an S3 host."""

from __future__ import annotations

import base64
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from twilio.request_validator import HMAC_SHA256, SIGNATURE_SETTINGS_HEADER, RequestValidator

from commpro.jobs import run_due
from commpro.messages import store
from commpro.messages.prices import PRICES
from commpro.messages.sms import estimate
from tests.conftest import new_user
from tests.test_messages import PEER, conversation, conversations, inbound, send
from tests.test_messages_media import FAST_FETCH, PNG, wait_for_media

SCHEMAS = json.loads((Path(__file__).parent / "oai" / "twilio_schemas.json").read_text())
TWILIO_STATUSES = SCHEMAS["components"]["schemas"]["message_enum_status"]["enum"]
SIGNING_KEY = "shared-signing-key-for-tests-0123456789"


@pytest.fixture
async def owner(service):
    user = new_user()
    return user, await service.add_number(user)


# -- segments ----------------------------------------------------------------------------------

# (body, encoding, segments, characters) as Twilio's segment calculator gives them.
CALCULATOR = [
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 3, 306),    # the escape pair would straddle: moves whole
    ("a" * 152 + "€" + "a" * 151, "GSM-7", 2, 305),
    ("ç" * 66 + "😀" + "ç" * 66, "UCS-2", 3, 133),     # the surrogate pair would straddle
    ("ç" * 66 + "😀" + "ç" * 65, "UCS-2", 2, 132),
    ("ç" * 66 + "👨‍👩‍👧" + "ç" * 60, "UCS-2", 3, 127),  # a family emoji (8 code units) is never split
    ("a" * 160, "GSM-7", 1, 160), ("a" * 161, "GSM-7", 2, 161), ("a" * 306, "GSM-7", 2, 306),
    ("€" * 80, "GSM-7", 1, 160), ("€" * 81, "GSM-7", 2, 162),
    ("😀" * 35, "UCS-2", 1, 35), ("😀" * 36, "UCS-2", 2, 36), ("👍🏽" * 17, "UCS-2", 1, 17),
    ("ç" * 70, "UCS-2", 1, 70), ("ç" * 71, "UCS-2", 2, 71),
    ("e\u0301" * 10, "UCS-2", 1, 10),                    # a combining accent is not GSM-7
    ("a\r\n" * 53, "GSM-7", 1, 159),                     # CR and LF count apart, as in the calculator
    ("", "GSM-7", 1, 0),
]


@pytest.mark.parametrize("body, encoding, segments, characters", CALCULATOR)
def test_estimate_matches_twilios_segment_calculator(body, encoding, segments, characters):
    result = estimate(body)
    assert (result.encoding, result.segments, result.characters) == (encoding, segments, characters)


async def test_preview_answers_segments_encoding_and_characters(service):
    resp = await service.client.post("/api/messages/preview", json={"body": "a" * 152 + "€" + "a" * 152},
                                     headers=service.auth())
    assert resp.status == 200
    assert await resp.json() == {"segments": 3, "encoding": "GSM-7", "characters": 306}
    resp = await service.client.post("/api/messages/preview", json={"body": "ç" * 66 + "😀" + "ç" * 66},
                                     headers=service.auth())
    assert await resp.json() == {"segments": 3, "encoding": "UCS-2", "characters": 133}


@pytest.mark.parametrize("payload, field", [
    ({}, "body"), ({"body": 5}, "body"), ({"body": None}, "body"), ({"body": "x" * 1601}, "body"),
    ({"body": "hi", "to": PEER}, "to"),
])
async def test_preview_bad_input_is_400(service, payload, field):
    resp = await service.client.post("/api/messages/preview", json=payload, headers=service.auth())
    assert resp.status == 400 and field in (await resp.json())["error"]["details"]
    assert (await service.client.post("/api/messages/preview", json={"body": "hi"})).status == 401


async def test_inbound_keeps_twilios_num_segments(service, owner):
    user, number = owner
    await inbound(service, PEER, number, body="court", NumSegments="4")
    [conv] = await conversations(service, user)
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    assert message["segments"] == 4  # Twilio's count, not the estimate of 1


async def test_outbound_keeps_twilios_count_and_the_price_fetch_updates_it(start_service):
    service = await start_service(COMMPRO_SANDBOX_PRICE_AFTER_S="3600")
    user = new_user()
    number = await service.add_number(user)
    body = "é" * 100  # GSM-7 in one segment by the calculator; the sandbox "Twilio" bills 2
    assert estimate(body).segments == 1
    resp = await send(service, user, number, body=body)
    sent = await resp.json()
    assert resp.status == 201 and sent["segments"] == 2
    assert (await service.sandbox.message(sent["sid"])).json()["num_segments"] == "2"
    await service.sandbox_idle()
    message_id = uuid.UUID(sent["messageId"])
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT num_segments FROM messages WHERE id = $1", message_id) == 2
        # As if the create response had not carried it: the price job's fetch brings it.
        await conn.execute("UPDATE messages SET num_segments = NULL WHERE id = $1", message_id)
    await service.sandbox_control(pricesNow=True)
    assert await price_fetched(service, message_id)
    [conv] = await conversations(service, user)
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    assert message["segments"] == 2


async def price_fetched(service, message_id: uuid.UUID) -> bool:
    """Run the price job an hour ahead until it has priced the message: the database is shared,
    so a round may claim other tests' messages first."""
    later = datetime.now(UTC) + timedelta(hours=1)
    for _ in range(50):
        await run_due(service.app, PRICES.kind, now=later)
        async with service.pool.acquire() as conn:
            if await conn.fetchval("SELECT price_state FROM messages WHERE id = $1", message_id) == "done":
                return True
    return False


# -- statuses ----------------------------------------------------------------------------------

# Real sequences Twilio reports; together they hold every value of message_enum_status but the
# inbound ones, tried below.
SEQUENCES = [
    ["accepted", "scheduled", "queued", "sending", "sent", "delivered", "read"],
    ["queued", "sending", "sent", "partially_delivered", "delivered"],
    ["queued", "sending", "sent", "undelivered"],
    ["accepted", "queued", "failed"],
    ["accepted", "scheduled", "canceled"],
]


async def outbound_row(service, user: str, number: str) -> tuple[uuid.UUID, str]:
    """An outbound message as _send stores it, with a SID the sandbox does not play."""
    message_id, sid = uuid.uuid4(), "SM" + uuid.uuid4().hex
    async with service.pool.acquire() as conn, conn.transaction():
        contact = await store.upsert_contact(conn, user, PEER)
        number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
        await store.insert_outbound(conn, message_id, user, contact["id"], number_id, number, PEER, None,
                                    "GSM-7", 0)
        await store.set_message_sid(conn, message_id, sid)
        # Not at the sandbox: nothing for the price job to fetch.
        await conn.execute("UPDATE messages SET price_state = 'done' WHERE id = $1", message_id)
    return message_id, sid


async def status(service, sid: str, value: str, **extra) -> None:
    resp = await service.webhook("/webhook/status", {"MessageSid": sid, "MessageStatus": value, **extra})
    assert resp.status == 204, await resp.text()


async def stored_status(service, message_id) -> str:
    async with service.pool.acquire() as conn:
        return await conn.fetchval("SELECT status FROM messages WHERE id = $1", message_id)


def test_the_order_covers_twilios_enum():
    assert set(store.STATUS_RANK) == set(TWILIO_STATUSES)
    assert store.STATUS_RANK["read"] > store.STATUS_RANK["delivered"]
    assert all(store.STATUS_RANK[s] == store.TERMINAL_RANK for s in ("canceled", "failed", "undelivered"))
    assert {s for seq in SEQUENCES for s in seq} | {"receiving", "received"} == set(TWILIO_STATUSES)


@pytest.mark.parametrize("value", TWILIO_STATUSES)
async def test_every_status_of_twilios_enum_is_accepted(service, owner, value):
    user, number = owner
    message_id, sid = await outbound_row(service, user, number)
    await status(service, sid, value)
    # Statuses before 'queued' (accepted, scheduled) do not move a queued message back.
    expected = value if store.STATUS_RANK[value] > store.STATUS_RANK["queued"] else "queued"
    assert await stored_status(service, message_id) == expected


@pytest.mark.parametrize("sequence", SEQUENCES, ids=lambda s: s[-1])
async def test_shuffled_callbacks_end_on_the_last_real_status(service, owner, sequence):
    user, number = owner
    rng = random.Random(14)
    orders = [list(sequence), list(reversed(sequence))] + [rng.sample(sequence, len(sequence)) for _ in range(4)]
    for order in orders:
        message_id, sid = await outbound_row(service, user, number)
        for value in order + order[:2]:  # and some twice
            await status(service, sid, value)
        assert await stored_status(service, message_id) == sequence[-1], order


async def test_nothing_moves_a_terminal_status(service, owner):
    user, number = owner
    for terminal in ("canceled", "failed", "undelivered"):
        message_id, sid = await outbound_row(service, user, number)
        await status(service, sid, terminal)
        for later in ("delivered", "read", "sent", "partially_delivered"):
            await status(service, sid, later)
        assert await stored_status(service, message_id) == terminal


async def test_unknown_status_is_400(service, owner):
    user, number = owner
    _, sid = await outbound_row(service, user, number)
    resp = await service.webhook("/webhook/status", {"MessageSid": sid, "MessageStatus": "exploded"})
    assert resp.status == 400


async def test_error_message_is_kept_from_the_callback_and_the_fetch(start_service):
    service = await start_service(COMMPRO_SANDBOX_PRICE_AFTER_S="3600")
    user = new_user()
    number = await service.add_number(user)
    _, sid = await outbound_row(service, user, number)
    await status(service, sid, "undelivered", ErrorCode="30003", ErrorMessage="Unreachable destination handset")
    [conv] = await conversations(service, user)
    [message] = (await conversation(service, user, conv["contactId"]))["messages"]
    assert (message["status"], message["errorCode"], message["errorMessage"]) == (
        "undelivered", 30003, "Unreachable destination handset")
    # A message the sandbox failed (its media unreachable): the callback says why, and so does
    # the fetch of the price job when the callback did not.
    resp = await service.client.post("/api/messages/send-mms", headers=service.auth(user), json={
        "from": number, "to": PEER, "body": "x", "mediaUrls": ["https://127.0.0.1:9/nothing.png"]})
    failed_id = uuid.UUID((await resp.json())["messageId"])
    await service.sandbox_idle()
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, error_code, error_message FROM messages WHERE id = $1", failed_id)
        assert tuple(row) == ("failed", 12300, "Invalid Content-Type or unreachable media URL")
        await conn.execute("UPDATE messages SET error_message = NULL WHERE id = $1", failed_id)
    await service.sandbox_control(pricesNow=True)
    assert await price_fetched(service, failed_id)
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT error_message FROM messages WHERE id = $1", failed_id) == (
            "Invalid Content-Type or unreachable media URL")


# -- webhook signatures with a shared key ----------------------------------------------------------


def sms_params(number: str) -> dict[str, str]:
    return {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": "signé", "NumMedia": "0"}


async def post_sms(service, params, signature, settings: str | None = None):
    headers = {"X-Twilio-Signature": signature}
    if settings is not None:
        headers[SIGNATURE_SETTINGS_HEADER] = settings
    return await service.client.post("/webhook/sms", data=params, headers=headers)


def sign(secret: str, service, params, algorithm=None) -> str:
    url = service.config.server.public_base_url + "/webhook/sms"
    return RequestValidator(secret).compute_signature(url, params, algorithm)


async def stored(service, sid: str) -> bool:
    async with service.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM messages WHERE sid = $1", sid) == 1


SHA256_SETTINGS = f"key=webhooks_sharedkey_1,algorithm={HMAC_SHA256}"


async def test_both_signature_schemes_are_accepted_with_a_signing_key(start_service):
    service = await start_service(TWILIO_WEBHOOK_SIGNING_KEY=SIGNING_KEY)
    number = await service.add_number(new_user())
    params = sms_params(number)
    resp = await post_sms(service, params, sign(SIGNING_KEY, service, params, HMAC_SHA256), SHA256_SETTINGS)
    assert resp.status == 200 and await stored(service, params["MessageSid"])
    params = sms_params(number)
    resp = await post_sms(service, params, sign(service.config.twilio.auth_token, service, params))
    assert resp.status == 200 and await stored(service, params["MessageSid"])


@pytest.mark.parametrize("case", ["sha1-signature-declared-sha256", "sha256-under-auth-token",
                                  "sha256-without-the-header", "unknown-algorithm"])
async def test_a_request_failing_its_declared_scheme_is_refused(start_service, logs, case):
    """Never retried under the other scheme: a SHA1 auth-token signature that would pass on its
    own is refused when the request declares HMAC-SHA256."""
    service = await start_service(TWILIO_WEBHOOK_SIGNING_KEY=SIGNING_KEY)
    number = await service.add_number(new_user())
    params = sms_params(number)
    token = service.config.twilio.auth_token
    signature, settings = {
        "sha1-signature-declared-sha256": (sign(token, service, params), SHA256_SETTINGS),
        "sha256-under-auth-token": (sign(token, service, params, HMAC_SHA256), SHA256_SETTINGS),
        "sha256-without-the-header": (sign(SIGNING_KEY, service, params, HMAC_SHA256), None),
        "unknown-algorithm": (sign(SIGNING_KEY, service, params, HMAC_SHA256), "key=k,algorithm=HMAC_SHA512"),
    }[case]
    resp = await post_sms(service, params, signature, settings)
    assert resp.status == 403
    assert not await stored(service, params["MessageSid"])
    [rejected] = [r for r in logs.records() if r["event"] == "webhook_signature_rejected"]
    assert rejected["reason"] == "mismatch"


async def test_a_shared_key_signature_without_a_configured_key_is_refused(service, logs):
    number = await service.add_number(new_user())
    params = sms_params(number)
    resp = await post_sms(service, params, sign(service.config.twilio.auth_token, service, params), SHA256_SETTINGS)
    assert resp.status == 403 and not await stored(service, params["MessageSid"])
    [rejected] = [r for r in logs.records() if r["event"] == "webhook_signature_rejected"]
    assert (rejected["reason"], rejected["scheme"]) == ("no_signing_key", HMAC_SHA256)


async def test_the_sandbox_signs_with_the_shared_key_end_to_end(start_service):
    service = await start_service(TWILIO_WEBHOOK_SIGNING_KEY=SIGNING_KEY)
    user = new_user()
    number = await service.add_number(user)
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    resp = await service.client.post("/_sandbox/simulate/sms", headers={"Authorization": auth},
                                     json={"from": PEER, "to": number, "body": "par clé partagée"})
    assert (await resp.json())["webhook"]["status"] == 200
    resp = await send(service, user, number, body="et retour")
    await service.sandbox_idle()
    [conv] = await conversations(service, user)
    messages = (await conversation(service, user, conv["contactId"]))["messages"]
    assert [(m["body"], m["status"]) for m in messages] == [("et retour", "delivered"), ("par clé partagée", "received")]


# -- media redirected to S3 ------------------------------------------------------------------------


async def test_inbound_media_redirected_to_an_s3_host_is_fetched(start_service):
    """The sandbox's S3 stand-in lives under another host name and, like S3, refuses a request
    that carries our credentials: the media arrives only if the redirect was followed without."""
    service = await start_service(**FAST_FETCH)
    user = new_user()
    number = await service.add_number(user)
    await service.sandbox_control(mediaRedirect="s3")
    auth = aiohttp.encode_basic_auth(service.config.twilio.account_sid, service.config.twilio.auth_token)
    await service.client.post("/_sandbox/simulate/sms", headers={"Authorization": auth}, json={
        "from": PEER, "to": number, "body": "ancienne photo",
        "media": [{"contentType": "image/png", "dataBase64": base64.b64encode(PNG).decode()}]})
    [media] = await wait_for_media(service, user, lambda media: media and media[0]["state"] != "pending")
    assert media["state"] == "done" and service.sandbox.s3_downloads == 1
    resp = await service.client.get(media["url"], headers=service.auth(user))
    assert await resp.read() == PNG
