"""The webhook guard: Twilio's signature over PUBLIC_BASE_URL + path + query, size and shape."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

SMS = {"MessageSid": "SM" + "a" * 32, "AccountSid": "AC" + "b" * 32, "From": "+33612345678",
       "To": "+15005550006", "Body": "hello"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def post(service, path, params, signature, headers=None, body=None):
    h = {**FORM, **(headers or {})}
    if signature is not None:
        h["X-Twilio-Signature"] = signature
    return await service.client.post(path, data=body if body is not None else urlencode(params), headers=h)


async def test_a_signed_webhook_is_accepted(service):
    resp = await post(service, "/webhook/sms", SMS, service.sign("/webhook/sms", SMS))
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    assert "<Response" in await resp.text()


async def test_query_string_is_part_of_the_signed_url(service):
    path = "/webhook/sms?callId=42&x=%2B1"
    resp = await post(service, path, SMS, service.sign(path, SMS))
    assert resp.status == 200
    resp = await post(service, "/webhook/sms?callId=43&x=%2B1", SMS, service.sign(path, SMS))
    assert resp.status == 403


@pytest.mark.parametrize("case", ["missing", "tampered", "wrong_url", "wrong_token", "empty"])
async def test_bad_signatures_are_refused_and_logged(service, logs, case):
    good = service.sign("/webhook/sms", SMS)
    params, signature = dict(SMS), good
    if case == "missing":
        signature = None
    elif case == "tampered":
        params["Body"] = "hellO"
    elif case == "wrong_url":
        signature = service.sign("/webhook/status", SMS)
    elif case == "wrong_token":
        from twilio.request_validator import RequestValidator

        signature = RequestValidator("0" * 32).compute_signature(service.config.server.public_base_url + "/webhook/sms", SMS)
    elif case == "empty":
        signature = ""
    resp = await post(service, "/webhook/sms", params, signature, headers={"X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    rejected = [r for r in logs.records() if r["event"] == "webhook_signature_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["remote"] == "127.0.0.1" and rejected[0]["forwarded_for"] == "203.0.113.9"
    assert not [r for r in logs.records() if r["event"] == "sms_received"], "the handler must not run"


async def test_behind_a_tls_proxy_the_public_url_is_what_counts(start_service):
    service = await start_service(PUBLIC_BASE_URL="https://commpro.example.com")
    proxy_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "commpro.example.com"}
    signed_public = service.sign("/webhook/sms", SMS)
    assert signed_public == service.sign("/webhook/sms", SMS, base="https://commpro.example.com")
    resp = await post(service, "/webhook/sms", SMS, signed_public, headers=proxy_headers)
    assert resp.status == 200
    # Signed for the URL this process sees locally: not what Twilio called, refused.
    local = service.sign("/webhook/sms", SMS, base=service.url)
    resp = await post(service, "/webhook/sms", SMS, local, headers=proxy_headers)
    assert resp.status == 403


async def test_oversized_body_is_413(service):
    big = {**SMS, "Body": "x" * (service.config.server.webhook_max_body_bytes + 10)}
    resp = await post(service, "/webhook/sms", big, service.sign("/webhook/sms", big))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("body", [b"\xff\xfe=\x00", b"MessageSid", b"From=%2B1&&To=2", b"From=1&", b"&From=1"])
async def test_malformed_body_is_400(service, body):
    """Not UTF-8, a field without '=', an empty field: as strict as urllib's parse_qsl."""
    resp = await post(service, "/webhook/sms", {}, "sig", body=body)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


@pytest.mark.parametrize("where", ["value", "key", "raw"])
async def test_a_signed_form_holding_nul_is_400(service, where):
    """PostgreSQL's text cannot hold NUL: refused, whether it came %-escaped or raw."""
    params = {**SMS, "Body": "a\x00b"} if where != "key" else {**SMS, "X\x00": "1"}
    body = urlencode(params)
    if where == "raw":
        body = body.replace("%00", "\x00")
    resp = await post(service, "/webhook/sms", params, service.sign("/webhook/sms", params), body=body)
    assert resp.status == 400
    assert "NUL" in (await resp.json())["error"]["message"]


async def test_a_body_that_only_reads_like_an_escaped_nul_is_accepted(service):
    params = {**SMS, "Body": "100%00 sure"}  # sent as 100%2500: no NUL once decoded
    assert "%2500" in urlencode(params)
    resp = await post(service, "/webhook/sms", params, service.sign("/webhook/sms", params))
    assert resp.status == 200


async def test_a_signature_over_the_url_with_its_default_port_is_accepted(start_service):
    """Twilio has signed URLs with the port written out: the twilio package's validate() allows
    for it, after the quicker check against the URL as requested."""
    service = await start_service(PUBLIC_BASE_URL="https://commpro.example.com")
    signed = service.sign("/webhook/sms", SMS, base="https://commpro.example.com:443")
    assert signed != service.sign("/webhook/sms", SMS)
    assert (await post(service, "/webhook/sms", SMS, signed)).status == 200
    # Another port is another URL.
    other = service.sign("/webhook/sms", SMS, base="https://commpro.example.com:8443")
    assert (await post(service, "/webhook/sms", SMS, other)).status == 403


async def test_a_signature_that_is_not_ascii_is_refused_not_a_crash(service):
    resp = await post(service, "/webhook/sms", SMS, "sïgnature=")
    assert resp.status == 403


async def test_non_form_body_is_415(service):
    resp = await post(service, "/webhook/sms", {}, "sig", headers={"Content-Type": "application/json"}, body=b'{"a": 1}')
    assert resp.status == 415


async def test_missing_required_fields_are_named(service):
    partial = {"From": "+33612345678", "Body": "hi"}
    resp = await post(service, "/webhook/sms", partial, service.sign("/webhook/sms", partial))
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "validation_failed"
    assert set(error["details"]) == {"MessageSid", "To"}
