"""Reading client input: JSON bodies, query strings, E.164 numbers, cursors.

A Fields collects every problem before raising one ValidationError whose details name each bad
field, so a client fixes its request in one round trip.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
import phonenumbers
from aiohttp import web

from commpro.errors import BadRequest, NotFound, UnsupportedMediaType, ValidationError

_MISSING = object()


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
    return data


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
        try:
            parsed = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            self.errors[name] = "must be an ISO 8601 timestamp with a time zone"
            return None
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
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError(details={field: "is not a cursor this service gave out"}) from None


def next_cursor(rows: list, limit: int, at: str = "created_at", row_id: str = "id") -> str | None:
    """The cursor of the following page, or None when this one is the last."""
    if len(rows) < limit:
        return None
    return encode_cursor(rows[-1][at], rows[-1][row_id])
