"""Reading client input: JSON bodies, query strings, E.164 numbers, cursors.

A Fields collects every problem before raising one ValidationError whose details name each bad
field, so a client fixes its request in one round trip.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import phonenumbers
from aiohttp import web

from commpro.errors import BadRequest, NotFound, UnsupportedMediaType, ValidationError

_MISSING = object()
# PostgreSQL's timestamptz reaches far wider than this, but a Python datetime near year 1 or
# 9999 overflows as soon as it is moved to UTC (asyncpg does, on the way out): a client date
# outside these years is refused rather than left to fail in the driver.
MIN_YEAR, MAX_YEAR = 1000, 9998
# Header values the service stores or echoes (Idempotency-Key): visible ASCII and spaces.
_HEADER_TOKEN = re.compile(r"^[\x20-\x7e]+$")


def has_nul(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys included) holds a NUL, which PostgreSQL's
    text type cannot store: refused at the door instead of failing in the database."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def refuse_nul(data: Any, what: str = "The body") -> None:
    if has_nul(data):
        raise BadRequest(f"{what} must not contain NUL characters")


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send application/json")
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object")
    refuse_nul(data)
    return data


def header_token(request: web.Request, name: str, max_len: int = 255) -> str | None:
    """An optional header the service keeps (printable ASCII, 1 to `max_len` characters), or a
    400 naming it. aiohttp hands other bytes over as surrogates, which the database refuses."""
    value = request.headers.get(name)
    if value is None:
        return None
    if len(value) > max_len or not _HEADER_TOKEN.match(value):
        raise ValidationError(details={name: f"1 to {max_len} printable ASCII characters"})
    return value


def instant(value: Any) -> datetime | None:
    """An ISO 8601 timestamp with its offset, within the years the service stores, else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        in_utc = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None
    if in_utc is None or not MIN_YEAR <= in_utc.year <= MAX_YEAR:
        return None
    return parsed


def is_e164(value: object) -> bool:
    if not isinstance(value, str) or not value.startswith("+"):
        return False
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed) and phonenumbers.format_number(
        parsed, phonenumbers.PhoneNumberFormat.E164) == value


def parse_uuid(value: str) -> uuid.UUID:
    """A path id; anything that is not a UUID is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound() from None


class Fields:
    """Typed reads from a JSON object or a query string, errors collected by field name."""

    def __init__(self, data: Mapping[str, Any], *, allowed: Iterable[str] | None = None) -> None:
        self.data = data
        self.errors: dict[str, str] = {}
        if allowed is not None:
            for name in set(data) - set(allowed):
                self.errors[name] = "unknown field"

    def _get(self, name: str, required: bool) -> Any:
        value = self.data.get(name, _MISSING)
        if value is None:
            self.errors[name] = "must not be null"
            return _MISSING
        if value is _MISSING:
            if required:
                self.errors[name] = "required"
            return _MISSING
        return value

    def e164(self, name: str, *, required: bool = True, nullable: bool = False) -> str | None:
        if nullable and name in self.data and self.data[name] is None:
            return None
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not is_e164(value):
            self.errors[name] = "must be a valid phone number in E.164 format (+ and country code)"
            return None
        return value

    def string(self, name: str, *, required: bool = True, min_len: int = 1, max_len: int = 1000,
               nullable: bool = False) -> str | None:
        if nullable and name in self.data and self.data[name] is None:
            return None
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not min_len <= len(value) <= max_len:
            self.errors[name] = f"must be a string of {min_len} to {max_len} characters"
            return None
        return value

    def integer(self, name: str, *, required: bool = True, low: int = 0, high: int = 2**31 - 1,
                default: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if isinstance(value, str):  # query strings
            try:
                value = int(value)
            except ValueError:
                pass
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.errors[name] = f"must be a whole number from {low} to {high}"
            return None
        return value

    def boolean(self, name: str, *, required: bool = True) -> bool | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.errors[name] = "must be true or false"
            return None
        return value

    def choice(self, name: str, options: Iterable[str], *, required: bool = True) -> str | None:
        options = tuple(options)
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if value not in options:
            self.errors[name] = "must be one of " + ", ".join(options)
            return None
        return value

    def timestamp(self, name: str, *, required: bool = False) -> datetime | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        parsed = instant(value)
        if parsed is None:
            self.errors[name] = f"must be an ISO 8601 timestamp with a time zone, years {MIN_YEAR} to {MAX_YEAR}"
        return parsed

    def e164_list(self, name: str, *, required: bool = True, max_items: int = 500) -> list[str] | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or len(value) > max_items or not all(is_e164(v) for v in value):
            self.errors[name] = f"must be a list of at most {max_items} E.164 numbers"
            return None
        return sorted(set(value))

    def check(self) -> None:
        if self.errors:
            raise ValidationError(details=dict(sorted(self.errors.items())))


def iso(value: datetime | None) -> str | None:
    """A timestamp as the API writes it (ISO 8601 with its offset), or None."""
    return value.isoformat() if value else None


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    """A keyset cursor: the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), str(row_id)])).decode().rstrip("=")


def decode_cursor(value: str, field: str = "cursor") -> tuple[datetime, uuid.UUID]:
    """The (timestamp, id) a cursor carries; 400 naming `field` for anything we did not give out."""
    try:
        at, row_id = orjson.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        parsed = instant(at), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        parsed = None, None
    if parsed[0] is None:
        raise ValidationError(details={field: "is not a cursor this service gave out"})
    return parsed


def next_cursor(rows: list, limit: int, at: str = "created_at", row_id: str = "id") -> str | None:
    """The cursor of the following page, or None when this one is the last."""
    if len(rows) < limit:
        return None
    return encode_cursor(rows[-1][at], rows[-1][row_id])
