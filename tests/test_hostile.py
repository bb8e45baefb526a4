"""Hostile input (issue 11): each input that once got a 500 now gets a clear 4xx JSON error.

Several cases need bytes that no well-behaved client library sends (non-UTF-8 headers), so
they go over a raw socket to the real server.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from urllib.parse import urlencode

import jwt
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import new_user
from tests.test_errors import assert_shape
from tests.test_messages_media import PEER, PNG, mms_form

NOW = 2_000_000_000


async def raw_request(service, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send `head` (request line and headers, without the blank line) and `body` as they are."""
    port = service.config.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), orjson.loads(payload)


def error_of(status: int, body: dict, expected: int) -> dict:
    assert status == expected, (status, body)
    return assert_shape(body)


@pytest.mark.parametrize("exp", ["²", "³³³", "9" * 5000, "-1", "1e9", ""])
async def test_media_expiry_that_is_not_ascii_digits_is_403(service, exp):
    resp = await service.client.get(f"/media/{uuid.uuid4()}", params={"exp": exp, "sig": "x"})
    assert error_of(resp.status, await resp.json(), 403)["code"] == "forbidden"


async def test_media_signature_with_non_ascii_is_403(service):
    resp = await service.client.get(f"/media/{uuid.uuid4()}?exp={NOW}&sig=%C3%A9")
    assert error_of(resp.status, await resp.json(), 403)["message"] == "Invalid media signature"


async def test_metrics_token_with_non_ascii_is_401(start_service):
    service = await start_service(COMMPRO_METRICS_TOKEN="s3cret")
    resp = await service.client.get("/metrics", headers={"Authorization": "Bearer é"})
    assert error_of(resp.status, await resp.json(), 401)["code"] == "unauthorized"
    status, body = await raw_request(service, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe")
    assert error_of(status, body, 401)["code"] == "unauthorized"
    resp = await service.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert resp.status == 200


async def test_plain_get_on_the_events_socket_is_426(service):
    resp = await service.client.get("/api/events", headers=service.auth())
    assert error_of(resp.status, await resp.json(), 426)["code"] == "upgrade_required"
    assert resp.headers["Upgrade"] == "websocket"


@pytest.mark.parametrize("body", [
    b"--xyz\r\nContent-Disposition: form-data; name=\"media\"\r\n\r\n\x89PNG",  # no closing boundary
    b"garbage without any boundary",
    b"--xyz\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\n\xff\xfe\r\n--xyz--\r\n",
    b"--xyz\r\n\r\n\r\n--xyz--\r\n",
])
async def test_malformed_multipart_mms_is_400(service, body):
    user = new_user()
    await service.add_number(user)
    headers = {**service.auth(user), "Content-Type": "multipart/form-data; boundary=xyz"}
    resp = await service.client.post("/api/messages/send-mms", data=body, headers=headers)
    assert resp.status in (400, 413, 415), resp.status
    assert_shape(await resp.json())


NESTED = (b"--xyz\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n"
          b"--inner\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nRIFF\r\n--inner--\r\n--xyz--\r\n")


async def test_nested_multipart_is_400_on_every_upload(service):
    user = new_user()
    number = await service.add_number(user)
    async with service.pool.acquire() as conn:
        number_id = await conn.fetchval("SELECT id FROM phone_numbers WHERE e164 = $1", number)
    headers = {**service.auth(user), "Content-Type": "multipart/form-data; boundary=xyz"}
    for method, path in (("POST", "/api/messages/send-mms"), ("PUT", f"/api/numbers/{number_id}/greetings/voicemail")):
        resp = await service.client.request(method, path, data=NESTED, headers=headers)
        assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request", path


async def test_multipart_without_a_boundary_is_400(service):
    headers = {**service.auth(), "Content-Type": "multipart/form-data"}
    resp = await service.client.post("/api/messages/send-mms", data=b"--a\r\n", headers=headers)
    assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request"


OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+00:00",
                "2024-01-01T00:00:00"]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("route", ["/api/calls", "/api/calls/alerts"])
async def test_dates_outside_the_stored_range_are_400(service, value, route):
    resp = await service.client.get(route, params={"since": value}, headers=service.auth())
    assert "since" in error_of(resp.status, await resp.json(), 400)["details"]
    if route == "/api/calls":
        resp = await service.client.get(route, params={"until": value}, headers=service.auth())
        assert "until" in error_of(resp.status, await resp.json(), 400)["details"]


def cursor(at: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([at, str(uuid.uuid4())])).decode().rstrip("=")


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, 12, None])
async def test_cursors_holding_dates_outside_the_range_are_400(service, value):
    for route, name in (("/api/calls", "cursor"), ("/api/messages/conversations", "cursor")):
        resp = await service.client.get(route, params={name: cursor(value)}, headers=service.auth())
        assert error_of(resp.status, await resp.json(), 400)["details"] == {name: "is not a cursor this service gave out"}
    user = new_user()
    contact = await conversation_of(service, user)
    resp = await service.client.get(f"/api/messages/conversations/{contact}", params={"before": cursor(value)},
                                    headers=service.auth(user))
    assert "before" in error_of(resp.status, await resp.json(), 400)["details"]


async def conversation_of(service, user) -> str:
    number = await service.add_number(user)
    resp = await service.client.post("/api/messages/send", json={"from": number, "to": PEER, "body": "hi"},
                                     headers=service.auth(user))
    assert resp.status == 201
    convs = await (await service.client.get("/api/messages/conversations", headers=service.auth(user))).json()
    return convs["conversations"][0]["contactId"]


async def test_non_utf8_idempotency_key_is_400(service):
    user = new_user()
    number = await service.add_number(user)
    body = orjson.dumps({"from": number, "to": PEER, "body": "hi"})
    head = (b"POST /api/messages/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + service.token(user).encode() + b"\r\nIdempotency-Key: k\xff\xfe")
    status, error = await raw_request(service, head, body)
    assert error_of(status, error, 400)["details"] == {"Idempotency-Key": "1 to 255 printable ASCII characters"}
    resp = await service.client.post("/api/messages/send", data=body, headers={
        **service.auth(user), "Content-Type": "application/json", "Idempotency-Key": "clé"})
    assert error_of(resp.status, await resp.json(), 400)["code"] == "validation_failed"


async def test_nul_in_a_greeting_is_400(service):
    user = new_user()
    await service.add_number(user)
    [number] = (await (await service.client.get("/api/numbers", headers=service.auth(user))).json())["numbers"]
    resp = await service.client.patch(f"/api/numbers/{number['id']}", json={"greetingText": "hello\x00world"},
                                      headers=service.auth(user))
    assert error_of(resp.status, await resp.json(), 400)["message"] == "The body must not contain NUL characters"


@pytest.mark.parametrize("payload", [{"body": "a\x00b"}, {"body\x00": "x"}, {"to": "+4479\x00"}])
async def test_nul_in_a_message_is_400(service, payload):
    user = new_user()
    number = await service.add_number(user)
    resp = await service.client.post("/api/messages/send", json={"from": number, "to": PEER, "body": "x", **payload},
                                     headers=service.auth(user))
    assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request"


async def test_nul_in_a_multipart_field_is_400(service):
    user = new_user()
    number = await service.add_number(user)
    resp = await service.client.post("/api/messages/send-mms", data=mms_form(number, [(PNG, "a.png", "image/png")],
                                                                              body="a\x00b"), headers=service.auth(user))
    assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request"


@pytest.mark.parametrize("sub", ["ali\x00ce", "\ud800", "x" * 256, "tab\there", ""])
async def test_a_jwt_sub_that_cannot_be_a_user_id_is_401(service, sub):
    claims = {"sub": sub, "exp": NOW}
    token = jwt.encode(claims, service.config.auth.jwt_secret, algorithm="HS256")
    resp = await service.client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
    assert error_of(resp.status, await resp.json(), 401)["code"] == "unauthorized"


async def test_nul_in_a_signed_webhook_is_400(service):
    number = await service.add_number(new_user())
    form = {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": "hi\x00there", "NumMedia": "0"}
    resp = await service.webhook("/webhook/sms", form)
    assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request"
    form = {**form, "Body": "hi", "From\x00": "x"}
    resp = await service.client.post("/webhook/sms", data=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": service.sign("/webhook/sms", form)})
    assert error_of(resp.status, await resp.json(), 400)["code"] == "bad_request"


def series(text: str) -> set[tuple]:
    """The labelled series of the request and signature metrics (the gauges of background
    loops, and the sandbox's routes, come and go on their own)."""
    return {(sample.name, tuple(sorted(sample.labels.items())))
            for family in text_string_to_metric_families(text)
            if family.name.startswith(("commpro_http_request", "commpro_webhook_signature"))
            for sample in family.samples
            # The sandbox's routes see the service's own background calls, which come and go.
            if not sample.labels.get("route", "").startswith("/_sandbox")}


async def test_unsigned_posts_to_many_paths_add_no_metric_series(service):
    async def hostile(i: int) -> None:
        letters = "".join(chr(ord("a") + int(d)) for d in f"{i:04d}")
        resp = await service.client.post("/webhook/" + letters, data={"a": "b"})
        assert resp.status == 403
        resp = await service.client.request(("PROPFIND", "DELETE")[i % 2], "/nowhere/" + letters)
        assert resp.status == 401
    await asyncio.gather(hostile(0), hostile(1))
    await service.client.get("/metrics")
    before = (await (await service.client.get("/metrics")).read()).decode()
    for start in range(2, 1000, 50):
        await asyncio.gather(*(hostile(i) for i in range(start, min(start + 50, 1000))))
    after = (await (await service.client.get("/metrics")).read()).decode()
    assert series(after) == series(before)
    assert 'route="unmatched"' in after and "/webhook/aaab" not in after


@pytest.mark.parametrize("value", ["99999999999999999999", "9" * 5000, "²"])
async def test_webhook_numbers_beyond_the_columns_are_400(service, value):
    form = {"MessageSid": "SM" + uuid.uuid4().hex, "MessageStatus": "failed", "ErrorCode": value}
    resp = await service.webhook("/webhook/status", form)
    assert error_of(resp.status, await resp.json(), 400)["details"] == {"ErrorCode": "must be a whole number"}
