"""Logs: JSON lines, one access line per request, nothing secret, numbers masked."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from commpro.logs import mask_phone

SECRET_BODY = "my PIN is 4242, do not tell"


async def test_access_line_and_redaction(service, logs):
    token = service.token("alice")
    number = await service.add_number("alice-logs")
    await service.client.get("/status", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "r-1"})
    params = {"MessageSid": "SM" + "c" * 32, "From": "+33612345678", "To": number, "Body": SECRET_BODY}
    await service.client.post("/webhook/sms", data=urlencode(params),
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "X-Twilio-Signature": service.sign("/webhook/sms", params)})
    await service.client.get("/status", headers={"Authorization": "Bearer " + token[:-3] + "abc"})
    text = logs.getvalue()
    records = logs.records()
    assert records and all(line.startswith("{") for line in text.splitlines())
    # The service's own background jobs may ask the sandbox for other tests' prices meanwhile
    # (the database is shared): only this test's requests count.
    access = [r for r in records if r["event"] == "request" and not r["path"].startswith("/_sandbox")]
    assert len(access) == 3
    first = access[0]
    assert (first["method"], first["route"], first["status"], first["user"], first["request_id"]) == (
        "GET", "/status", 200, "alice", "r-1")
    assert first["duration_ms"] >= 0
    assert access[2]["status"] == 401 and access[2]["user"] is None
    # No token, no signature, no body, no full number; the masked number is there.
    assert token not in text and token[:-3] not in text
    assert service.sign("/webhook/sms", params) not in text
    assert SECRET_BODY not in text and "PIN" not in text
    assert "+33612345678" not in text and "33612345678" not in text
    assert "+*******5678" in text
    assert service.config.twilio.auth_token not in text and service.config.auth.jwt_secret not in text


def test_mask_phone():
    assert mask_phone("call +15005550006 now") == "call +*******0006 now"
    assert mask_phone("to=%2B33612345678") == "to=%2B*******5678"
    assert mask_phone("2026-11-20T10:00:00Z 550e8400-e29b-41d4-a716-446655440000") == (
        "2026-11-20T10:00:00Z 550e8400-e29b-41d4-a716-446655440000")
    assert re.fullmatch(r"\+\*+\d{4}", mask_phone("+447911123456"))
