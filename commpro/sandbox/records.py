"""What the sandbox makes: calls, messages, media and recordings, and their JSON (the rows of
sandbox/store.py, as the lifecycle plays them).

Resource JSON follows Twilio's OpenAPI description (twilio_api_v2010.json, twilio_insights_v1.json);
tests/oai holds the schemas they are checked against.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

API_VERSION = "2010-04-01"


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(dt: datetime | None) -> str | None:
    return format_datetime(dt, usegmt=True) if dt else None


def iso(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SandboxCall:
    sid: str
    account_sid: str
    from_: str
    to: str
    direction: str  # "outbound-api", "inbound" or "outbound-dial"
    status: str = "queued"
    parent_sid: str | None = None
    url: str | None = None  # always fetched with POST, as CommPro asks
    twiml: str | None = None
    status_callback: str | None = None
    status_events: frozenset[str] = frozenset({"completed"})
    created: datetime = field(default_factory=now)
    updated: datetime = field(default_factory=now)
    start: datetime | None = None
    end: datetime | None = None
    duration: int | None = None
    sequence: int = 0
    error_code: int | None = None
    # Twilio prices a call a while after it ends: until then `price` is null.
    price_at: datetime | None = None

    @property
    def price(self) -> str | None:
        if self.price_at is None or now() < self.price_at:
            return None
        minutes = -(-(self.duration or 0) // 60)
        return f"{-0.013 * minutes:.5f}" if minutes else "0.00000"

    def json(self) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.updated),
            "parent_call_sid": self.parent_sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": rfc2822(self.start),
            "end_time": rfc2822(self.end),
            "duration": str(self.duration) if self.duration is not None else None,
            "price": self.price,
            "price_unit": "USD",
            "direction": self.direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": base + ".json",
            "subresource_uris": {
                "recordings": base + "/Recordings.json",
                "notifications": base + "/Notifications.json",
                "events": base + "/Events.json",
            },
        }


@dataclass
class SandboxMedia:
    sid: str
    message_sid: str
    account_sid: str
    content_type: str
    data: bytes
    created: datetime = field(default_factory=now)

    def json(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "content_type": self.content_type,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.created),
            "parent_sid": self.message_sid,
            "sid": self.sid,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.message_sid}/Media/{self.sid}.json",
        }


@dataclass
class SandboxMessage:
    sid: str
    account_sid: str
    from_: str
    to: str
    body: str
    direction: str  # "outbound-api" or "inbound"
    status: str = "queued"
    status_callback: str | None = None
    media_urls: tuple[str, ...] = ()
    media: list[SandboxMedia] = field(default_factory=list)
    created: datetime = field(default_factory=now)
    updated: datetime = field(default_factory=now)
    sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    price_at: datetime | None = None
    # Counted when the message is created, as on Twilio: a redaction later keeps the count.
    num_segments: int = 0
    # True once the body was redacted (POST Messages/{sid} with Body="").
    redacted: bool = False

    def __post_init__(self) -> None:
        self.num_segments = self.num_segments or segments(self.body)

    @property
    def price(self) -> str | None:
        if self.price_at is None or now() < self.price_at:
            return None
        return f"{-0.0079 * self.num_segments:.5f}"

    @property
    def num_media(self) -> int:
        return len(self.media) or len(self.media_urls)

    def json(self) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "body": self.body,
            "num_segments": str(self.num_segments),
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "date_updated": rfc2822(self.updated),
            "price": self.price,
            "error_message": self.error_message,
            "uri": base + ".json",
            "account_sid": self.account_sid,
            "num_media": str(self.num_media),
            "status": self.status,
            "messaging_service_sid": None,
            "sid": self.sid,
            "date_sent": rfc2822(self.sent),
            "date_created": rfc2822(self.created),
            "error_code": self.error_code,
            "price_unit": "USD",
            "api_version": API_VERSION,
            "subresource_uris": {"media": base + "/Media.json", "feedback": base + "/Feedback.json"},
        }


@dataclass
class SandboxRecording:
    sid: str
    call_sid: str
    account_sid: str
    duration: int
    created: datetime = field(default_factory=now)
    channels: int = 1
    source: str = "RecordVerb"

    def json(self) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "call_sid": self.call_sid,
            "conference_sid": None,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.created),
            "start_time": rfc2822(self.created),
            "duration": str(self.duration),
            "sid": self.sid,
            "price": None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{self.sid}.json",
            "encryption_details": None,
            "price_unit": "USD",
            "status": "completed",
            "channels": self.channels,
            "source": self.source,
            "error_code": None,
            "track": "both",
        }


def segments(body: str) -> int:
    """How many SMS segments the sandbox bills (GSM-7: 160/153, UCS-2: 70/67). Its own, cruder
    rule (only ASCII counts as GSM-7): CommPro stores whatever count "Twilio" gives."""
    gsm = all(ord(c) < 128 for c in body)
    single, multi = (160, 153) if gsm else (70, 67)
    if len(body) <= single:
        return 1
    return -(-len(body) // multi)
