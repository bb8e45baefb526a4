"""Encryption at rest with per-user keys.

Each user has a random 256-bit data key, stored wrapped (AES-256-GCM) by the master key
COMMPRO_MASTER_KEY, with the master key's id beside it so that the master key can rotate: older
master keys stay readable through crypto.previous_master_keys until `commpro keys rotate-master`
has re-wrapped every data key. Message bodies and media are sealed with AES-256-GCM under the
user's data key, a fresh 96-bit nonce each time, and associated data naming the user and the
row: a ciphertext copied to another row, or another user's, does not open.

This is encryption at rest, not end-to-end: Twilio and the carriers see every SMS.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from commpro.keys import store
from commpro.settings import CryptoSettings

NONCE_BYTES = 12


class KeyShredded(Exception):
    """The user's data key was destroyed: what it sealed is gone for good."""


class Unreadable(Exception):
    """A ciphertext does not open: tampered with, or moved from another row."""


def master_key_id(key: bytes) -> str:
    """Names a master key without revealing it."""
    return hashlib.sha256(b"commpro-master-key-id:" + key).hexdigest()[:16]


def _aad_user_key(user_id: str) -> bytes:
    return b"commpro:user-key:" + user_id.encode()


def aad(kind: str, user_id: str, row_id: object) -> bytes:
    """Associated data binding a ciphertext to its user and row."""
    return f"commpro:{kind}:{user_id}:{row_id}".encode()


@dataclass(frozen=True)
class DataKey:
    key: bytes
    created_at: datetime

    @cached_property
    def aead(self) -> AESGCM:
        """The cipher under this key, made once per cached key rather than per message."""
        return AESGCM(self.key)


class KeyRing:
    """The master keys and a bounded, time-limited cache of unwrapped data keys."""

    def __init__(self, settings: CryptoSettings) -> None:
        current = base64.b64decode(settings.master_key)
        self.current_id = master_key_id(current)
        self._masters = {self.current_id: AESGCM(current)}
        for encoded in settings.previous_master_keys:
            previous = base64.b64decode(encoded)
            self._masters.setdefault(master_key_id(previous), AESGCM(previous))
        self._ttl_s = settings.key_cache_ttl_s
        self._max = settings.key_cache_size
        self._cache: dict[str, tuple[float, DataKey]] = {}

    # -- data keys -------------------------------------------------------------------------

    def wrap(self, user_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._masters[self.current_id].encrypt(nonce, key, _aad_user_key(user_id))

    def unwrap(self, user_id: str, wrapped: bytes, key_id: str) -> bytes:
        master = self._masters.get(key_id)
        if master is None:
            raise RuntimeError(f"data key of a user is wrapped by master key {key_id}, which is not configured "
                               "(add it to crypto.previous_master_keys)")
        return master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad_user_key(user_id))

    def cached_key(self, user_id: str) -> DataKey | None:
        """The user's data key if it is cached (and fresh): no connection needed."""
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    async def data_key(self, conn: asyncpg.Connection, user_id: str, *, create: bool) -> DataKey:
        """The user's data key; a new one when `create` and there is none (or it was shredded).
        Raises KeyShredded when there is none to read with. Only keys read from committed rows
        are cached."""
        cached = self.cached_key(user_id)
        if cached is not None:
            return cached
        row = await store.get_user_key(conn, user_id)
        if (row is None or row["wrapped_key"] is None) and create:
            await store.insert_user_key(conn, user_id, self.wrap(user_id, os.urandom(32)), self.current_id)
            row = await store.get_user_key(conn, user_id)
        if row is None or row["wrapped_key"] is None:
            raise KeyShredded(user_id)
        key = DataKey(self.unwrap(user_id, row["wrapped_key"], row["master_key_id"]), row["created_at"])
        if row["uncommitted"]:
            # Created (or re-created) by the caller's transaction: should it roll back, a cached
            # copy would seal content under a key that exists in no row, unreadable for ever.
            # The next call reads it again, committed.
            return key
        if len(self._cache) >= self._max:
            self._cache.pop(next(iter(self._cache)))
        self._cache[user_id] = (time.monotonic() + self._ttl_s, key)
        return key

    # -- content ---------------------------------------------------------------------------

    @staticmethod
    def seal(key: DataKey, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, nonce): a fresh random nonce every time."""
        nonce = os.urandom(NONCE_BYTES)
        return key.aead.encrypt(nonce, plaintext, associated), nonce

    @staticmethod
    def open(key: DataKey, ciphertext: bytes, nonce: bytes, associated: bytes) -> bytes:
        try:
            return key.aead.decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise Unreadable() from None
