"""Business hours: a weekly schedule in the number's own time zone, with exceptions (holidays,
special days), and what happens to calls outside it.

Stored as one JSON document on the number:
    {"timeZone": "Europe/Paris",
     "weekly": {"mon": [["09:00", "12:30"], ["14:00", "18:00"]], ...},   # a day not named is closed
     "exceptions": [{"date": "2026-12-25", "hours": []}, {"date": "2026-12-24", "hours": [["09:00", "12:00"]]}],
     "afterHours": "voicemail" | "reject" | "forward",
     "afterHoursGreeting": "..." | null, "afterHoursForwardTo": "+33..." | null}

Times are wall-clock times of that zone (zoneinfo): a day's opening is the same local time on
either side of a DST change, and "24:00" closes at midnight.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commpro.validation import is_e164

ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AFTER_HOURS = ("voicemail", "reject", "forward")
KEYS = {"timeZone", "weekly", "exceptions", "afterHours", "afterHoursGreeting", "afterHoursForwardTo"}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
MAX_EXCEPTIONS = 400
# How far ahead the next opening or closing is looked for (long holidays included).
HORIZON_DAYS = 400


def _time(value: object) -> time | None:
    """A wall-clock time; 24:00 is the end of the day (None is returned for it)."""
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError("times are HH:MM, 00:00 to 24:00")
    return None if value == "24:00" else time.fromisoformat(value)


def _ranges(value: object, where: str) -> list[list[str]]:
    if not isinstance(value, list) or len(value) > 12:
        raise ValueError(f"{where}: a list of [open, close] pairs")
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"{where}: a list of [open, close] pairs")
        start, end = _time(pair[0]), _time(pair[1])
        if start is None or (end is not None and end <= start):
            raise ValueError(f"{where}: each range closes after it opens")
    return value


def validate(value: object) -> dict[str, Any]:
    """The schedule as stored, or ValueError saying what is wrong (shown to the client)."""
    if not isinstance(value, dict) or not set(value) <= KEYS:
        raise ValueError("an object with " + ", ".join(sorted(KEYS)))
    zone = value.get("timeZone")
    try:
        if not isinstance(zone, str) or "." in zone:
            raise ZoneInfoNotFoundError
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("timeZone: an IANA time zone name such as Europe/Paris") from None
    weekly = value.get("weekly", {})
    if not isinstance(weekly, dict) or not set(weekly) <= set(DAYS):
        raise ValueError("weekly: an object keyed by " + ", ".join(DAYS))
    for day, ranges in weekly.items():
        _ranges(ranges, f"weekly.{day}")
    exceptions = value.get("exceptions", [])
    if not isinstance(exceptions, list) or len(exceptions) > MAX_EXCEPTIONS:
        raise ValueError(f"exceptions: a list of at most {MAX_EXCEPTIONS} {{date, hours}}")
    for item in exceptions:
        if not isinstance(item, dict) or set(item) != {"date", "hours"}:
            raise ValueError("exceptions: each is {date: YYYY-MM-DD, hours: [] (closed) or ranges}")
        try:
            # Exactly YYYY-MM-DD: fromisoformat also takes 20261225 and 2026-W52-5, which would
            # never match a day's isoformat() and so be silently ignored.
            if not ISO_DATE.match(item["date"]):
                raise ValueError
            date.fromisoformat(item["date"])
        except (TypeError, ValueError):
            raise ValueError("exceptions: date is YYYY-MM-DD") from None
        _ranges(item["hours"], f"exceptions.{item['date']}")
    after = value.get("afterHours", "voicemail")
    if after not in AFTER_HOURS:
        raise ValueError("afterHours: one of " + ", ".join(AFTER_HOURS))
    greeting = value.get("afterHoursGreeting")
    if greeting is not None and (not isinstance(greeting, str) or not 0 < len(greeting) <= 500):
        raise ValueError("afterHoursGreeting: text of 1 to 500 characters, or null")
    forward_to = value.get("afterHoursForwardTo")
    if forward_to is not None and not is_e164(forward_to):
        raise ValueError("afterHoursForwardTo: an E.164 number, or null")
    if after == "forward" and forward_to is None:
        raise ValueError("afterHours forward needs afterHoursForwardTo")
    return {"timeZone": zone, "weekly": weekly, "exceptions": exceptions, "afterHours": after,
            "afterHoursGreeting": greeting, "afterHoursForwardTo": forward_to}


def _day_ranges(schedule: dict[str, Any], day: date) -> list[list[str]]:
    for item in schedule["exceptions"]:
        if item["date"] == day.isoformat():
            return item["hours"]
    return schedule["weekly"].get(DAYS[day.weekday()], [])


def _intervals(schedule: dict[str, Any], first: date, days: int) -> list[tuple[datetime, datetime]]:
    """Open intervals in UTC, merged, for the local days [first, first + days)."""
    zone = ZoneInfo(schedule["timeZone"])
    found = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        for start, end in _day_ranges(schedule, day):
            opens = datetime.combine(day, _time(start), zone)
            end_time = _time(end)
            closes = datetime.combine(day + timedelta(days=1), time(0), zone) if end_time is None \
                else datetime.combine(day, end_time, zone)
            found.append((opens.astimezone(UTC), closes.astimezone(UTC)))
    found.sort()
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in found:
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


def status(schedule: dict[str, Any] | None, at: datetime) -> tuple[bool, datetime | None]:
    """(open now, when that changes): always open without a schedule; None when it never
    changes within the horizon."""
    if schedule is None:
        return True, None
    first = at.astimezone(ZoneInfo(schedule["timeZone"])).date() - timedelta(days=1)
    # Two weeks answer nearly always; the long look only for long closures or 24/7 schedules.
    for days in (16, HORIZON_DAYS):
        intervals = _intervals(schedule, first, days)
        horizon_end = datetime.combine(first + timedelta(days=days), time(0), ZoneInfo(schedule["timeZone"]))
        for opens, closes in intervals:
            if opens <= at < closes:
                if closes < horizon_end:
                    return True, closes
                break  # open up to the end of this look: look further
            if opens > at:
                return False, opens
        else:
            continue
        if days == HORIZON_DAYS:
            return True, None
    return False, None
