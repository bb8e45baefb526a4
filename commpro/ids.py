"""Ids of the rows the busiest webhooks insert: UUIDv7 (RFC 9562), time-ordered.

A random (v4) id lands on a random leaf of its primary key's index, and, the first time a leaf
is touched after a checkpoint, PostgreSQL writes the whole 8 KiB page to the WAL, which the
commit flushes. Where messages between two checkpoints are few beside the index's leaves (a big
table, a steady trickle: production), that is nearly every insert: `inbound_sms_batch` on a
million messages, a checkpoint every 9,600, wrote 8.3 KB of WAL per message with v4 ids and 2.8
KB with these (tests/bench/wal_ids.py), each new id sorting after the last millisecond's, so
that the inserts share the index's last leaves (the price job's key, the message id, too).
README: Database.

They carry their creation time to the millisecond, as the rows' `created_at` does, beside 74
random bits. Python 3.14's `uuid.uuid7` (which also orders the ids of one millisecond) is not in
3.11 to 3.13.
"""

from __future__ import annotations

import secrets
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def uuid7() -> uuid.UUID:
    """48 bits of Unix time in milliseconds, version 7, 12 random bits, the RFC's variant, 62
    random bits."""
    millis = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    return uuid.UUID(int=(millis & (1 << 48) - 1) << 80 | _VERSION | (rand >> 62) << 64 | _VARIANT
                     | rand & (1 << 62) - 1)
