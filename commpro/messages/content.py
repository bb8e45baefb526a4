"""Sealing and opening message bodies and media with the user's data key."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import structlog

from commpro.keys import DataKey, KeyRing, KeyShredded, Unreadable, aad

log = structlog.get_logger("commpro.messages")
# What a client is told about a piece of content.
AVAILABLE, ERASED, UNREADABLE = "available", "erased", "unreadable"


async def reading_key(keyring: KeyRing, conn: asyncpg.Connection, user_id: str) -> DataKey | None:
    """The key to read a user's content with; None once it was shredded."""
    try:
        return await keyring.data_key(conn, user_id, create=False)
    except KeyShredded:
        return None


def open_content(key: DataKey | None, kind: str, user_id: str, row_id: object, ciphertext: bytes | None,
                 nonce: bytes | None, created_at: datetime) -> tuple[bytes | None, str]:
    """(plaintext, AVAILABLE), or (None, ERASED) for content sealed under a key since shredded,
    or (None, UNREADABLE) for a ciphertext that does not open (tampered with, or moved)."""
    if ciphertext is None:
        return None, AVAILABLE
    if key is None or created_at < key.created_at:
        return None, ERASED
    try:
        return KeyRing.open(key, ciphertext, nonce, aad(kind, user_id, row_id)), AVAILABLE
    except Unreadable:
        log.error("content_unreadable", kind=kind, row_id=str(row_id), user=user_id)
        return None, UNREADABLE


def seal(key: DataKey, kind: str, user_id: str, row_id: object, plaintext: bytes) -> tuple[bytes, bytes]:
    return KeyRing.seal(key, plaintext, aad(kind, user_id, row_id))
