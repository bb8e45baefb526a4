"""commpro/ids.py: UUIDv7 as RFC 9562 lays it out, time-ordered across milliseconds."""

from __future__ import annotations

import time
import uuid

from commpro.ids import uuid7


def test_a_uuid7_has_the_rfcs_version_variant_and_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    made = uuid7()
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_later_ids_sort_after_earlier_ones_and_none_repeats():
    first = [uuid7() for _ in range(5000)]
    millis = first[-1].int >> 80
    while time.time_ns() // 1_000_000 <= millis:  # the next millisecond
        time.sleep(0.0005)
    second = [uuid7() for _ in range(5000)]
    assert max(first) < min(second)
    assert str(max(first)) < str(min(second))  # as text too (the price job's key)
    assert len(set(first + second)) == 10_000
    # The random bits are random: ids of one millisecond differ beyond the timestamp.
    assert len({u.int & (1 << 62) - 1 for u in first}) == 5000
    assert len({u.int >> 64 & 0xFFF for u in first}) > 1000  # the 12 bits beside the version too
