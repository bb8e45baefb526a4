"""Logs: JSON lines, one access line per request, nothing secret, numbers masked."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from commpro.logs import mask_phone

SECRET_BODY = "my PIN is 4242, do not tell"


async def test_access_line_and_redaction(service, logs):
    token = service.token("alice")
    number = await service.add_number("alice-logs")
    await service.client.get("/status", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "r-1"})
    params = {"MessageSid": "SM" + "c" * 32, "From": "+33612345678", "To": number, "Body": SECRET_BODY}
    await service.client.post("/webhook/sms", data=urlencode(params),
                              headers={"Content-Type": "application/x-www-form-urlencoded",
                                       "X-Twilio-Signature": service.sign("/webhook/sms", params),
                                       "X-Request-ID": "r-2"})
    await service.client.get("/status", headers={"Authorization": "Bearer " + token[:-3] + "abc"})
    text = logs.getvalue()
    records = logs.records()
    assert records and all(line.startswith("{") for line in text.splitlines())
    # The service's own background jobs may ask the sandbox for other tests' prices meanwhile
    # (the database is shared): only this test's requests count.
    access = [r for r in records if r["event"] == "request" and not r["path"].startswith("/_sandbox")]
    assert len(access) == 3
    first = access[0]
    # When, in UTC, to the microsecond: the same shape on every line.
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in access]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r["timestamp"]) for r in access)
    assert stamps == sorted(stamps) and abs(datetime.now(UTC) - stamps[-1]) < timedelta(minutes=1)
    assert (first["method"], first["route"], first["status"], first["user"], first["request_id"]) == (
        "GET", "/status", 200, "alice", "r-1")
    assert first["duration_ms"] >= 0
    assert access[2]["status"] == 401 and access[2]["user"] is None
    # The webhook's own line (written directly, as the access line): its logger, level and request.
    [received] = [r for r in records if r["event"] == "sms_received"]
    assert set(received) == {"event", "logger", "level", "timestamp", "request_id", "message_sid", "from_number",
                             "to_number", "num_media", "duplicate", "keyword", "blocked"}
    assert (received["logger"], received["level"], received["request_id"], received["from_number"]) == (
        "commpro.messages", "info", "r-2", "+*******5678")
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


def test_a_librarys_own_message_is_masked_too(logs):
    """A stdlib logger's text is the line's `event`: numbers and tokens in it are masked like
    any other value (our own events are fixed names, which the masking leaves as they are)."""
    import logging

    logging.getLogger("some.library").warning("POST to +33612345678 with Bearer eyJhbGciOi.eyJzdWIi.c2ln failed")
    line = next(r for r in logs.records() if r.get("logger") == "some.library")
    assert line["event"] == "POST to +*******5678 with Bearer [jwt] failed"


def test_console_format_is_for_people_and_still_redacted(logs):
    import io
    import logging

    import structlog

    from commpro.logs import _direct, configure_logging

    out = io.StringIO()
    configure_logging("INFO", out, "console")
    try:
        structlog.get_logger("commpro.test").info("sms_sent", to="+33612345678", body=SECRET_BODY, token="eyJa.b.c")
        # A line the JSON format writes directly goes through structlog here, redacted the same.
        _direct.write(logging.INFO, "r-3", "commpro.messages", "sms_received", from_number="+33699998888")
        try:
            raise RuntimeError("boom for +33612345678")
        except RuntimeError:
            structlog.get_logger("commpro.test").exception("failed")
    finally:
        configure_logging("DEBUG", logs)
    text = out.getvalue()
    assert "sms_sent" in text and "sms_received" in text and not text.lstrip().startswith("{")
    assert "+*******8888" in text and "+33699998888" not in text
    assert "\x1b[" not in text  # no colours when not on a terminal
    assert "+*******5678" in text and "+33612345678" not in text
    assert SECRET_BODY not in text and "eyJa" not in text
    assert "RuntimeError: boom for +*******5678" in text


def test_log_format_follows_the_environment():
    from commpro.config import ConfigError, load_config

    assert load_config(env={}).log.format == "console"
    assert load_config(env={"LOG_FORMAT": "json"}).log.format == "json"
    production = {"COMMPRO_ENV": "production", "JWT_SECRET": "j" * 48, "COMMPRO_MASTER_KEY": "A" * 43 + "=",
                  "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "2" * 32,
                  "PUBLIC_BASE_URL": "https://commpro.example.com"}
    assert load_config(env=production).log.format == "json"
    try:
        load_config(env={"LOG_FORMAT": "xml"})
    except ConfigError as exc:
        assert "LOG_FORMAT" in str(exc)
    else:
        raise AssertionError("LOG_FORMAT=xml was accepted")


async def test_the_sandbox_talking_to_itself_is_logged_at_debug(service, logs):
    user = "alice-sandbox-logs"
    number = await service.add_number(user)
    resp = await service.client.post("/api/messages/send", json={"from": number, "to": "+33612345678", "body": "hi"},
                                     headers=service.auth(user))
    assert resp.status == 201
    await service.sandbox_idle()
    access = {(r["route"], r["level"]) for r in logs.records() if r["event"] == "request"}
    assert ("/api/messages/send", "info") in access
    # The twilio client's request to the sandbox, and the sandbox's status callbacks.
    assert ("/_sandbox/api/2010-04-01/Accounts/{account_sid}/Messages.json", "debug") in access
    assert ("/webhook/status", "debug") in access
    assert not any(route and route.startswith("/_sandbox") and level != "debug" for route, level in access)


async def test_without_the_sandbox_no_header_lowers_a_request(start_service, logs):
    service = await start_service(TWILIO_ACCOUNT_SID="AC" + "3" * 32, TWILIO_AUTH_TOKEN="4" * 32)
    await service.client.get("/healthz", headers={"User-Agent": "TwilioProxy/1.1 (commpro sandbox)"})
    [line] = [r for r in logs.records() if r["event"] == "request"]
    assert line["level"] == "info"


@pytest.mark.parametrize(("logger", "event", "fields"), [
    ("commpro.access", "request", {"method": "POST", "route": "/webhook/sms/{to}", "path": "/webhook/sms/+33612345678",
                                   "status": 204, "duration_ms": 1.5, "user": "alice", "remote": "127.0.0.1"}),
    ("commpro.messages", "sms_received", {"message_sid": "SM" + "a" * 32, "from_number": "+33612345678",
                                          "to_number": "+14155550100", "num_media": 0, "duplicate": False,
                                          "keyword": None, "blocked": False}),
], ids=["access", "sms_received"])
def test_a_line_written_directly_is_the_line_structlog_writes(logs, logger, event, fields):
    """In JSON the access line and a webhook's outcome skip structlog's chain
    (commpro.logs._DirectLine): the same keys, values and redaction as the chain gives, and the
    same level threshold."""
    import io
    import json
    import logging

    import structlog

    from commpro.logs import _direct, configure_logging

    out = io.StringIO()
    configure_logging("INFO", out, "json")
    try:
        structlog.contextvars.bind_contextvars(request_id="r-9")
        _direct.write(logging.INFO, "r-9", logger, event, **fields)
        structlog.get_logger(logger).log(logging.INFO, event, **fields)
        _direct.write(logging.DEBUG, "r-9", logger, event, **fields)  # below INFO: not written
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        configure_logging("DEBUG", logs)
    direct, chained = (json.loads(line) for line in out.getvalue().splitlines())
    assert direct.pop("timestamp") and chained.pop("timestamp")
    assert direct == chained
    assert direct["event"] == event and direct["logger"] == logger and direct["request_id"] == "r-9"
    assert "+33612345678" not in json.dumps(direct) and "+*******5678" in json.dumps(direct)
    assert direct["level"] == "info"
