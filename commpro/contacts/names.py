"""Contact names and notes, sealed like message bodies, and a blind index to search names by.

A name is personal data: it is sealed with the user's data key (AES-256-GCM, associated data
naming the user and the contact). To search it without decrypting every contact, each name
also carries a keyed blind index: HMAC-SHA256 tags of every prefix of every normalised word
(case, accents and punctuation dropped), under a key derived from the user's data key. A query
is normalised the same way and matches the contacts whose index holds the tag of each of its
words, in SQL, with paging, at any number of contacts.

Why this rather than decrypting the user's contacts and filtering in memory: that reads and
decrypts every contact for every page of every search, and cursor paging over a filtered,
in-memory set is fragile. What the index reveals to someone who reads the database without the
keys is only which of one user's contacts share a name prefix (tags are per user, so nothing
across users), and a shred of the user's key makes the tags unlinkable to any name.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import datetime

import regex

from commpro.keys import DataKey
from commpro.messages.content import AVAILABLE, open_content, seal

MAX_WORDS = 8
MAX_PREFIX = 24
TAG_BYTES = 12
WORD = regex.compile(r"[\p{L}\p{N}]+")


def words(text: str) -> list[str]:
    """Lower case, accents dropped, split on anything that is not a letter or a digit."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return WORD.findall(plain)


def _tag(index_key: bytes, prefix: str) -> str:
    return hmac.new(index_key, prefix.encode(), hashlib.sha256).digest()[:TAG_BYTES].hex()


def _index_key(key: DataKey) -> bytes:
    return hmac.new(key.key, b"commpro:contact-name-index", hashlib.sha256).digest()


def name_index(key: DataKey, name: str | None) -> list[str]:
    """The tags of every prefix of every word of `name` (a few words, each prefix capped)."""
    if not name:
        return []
    index_key = _index_key(key)
    tags = {_tag(index_key, word[:n]) for word in words(name)[:MAX_WORDS]
            for n in range(1, min(len(word), MAX_PREFIX) + 1)}
    return sorted(tags)


def query_tags(key: DataKey, query: str) -> list[str]:
    """The tags a matching name's index must all hold: one per word of the query."""
    index_key = _index_key(key)
    return sorted({_tag(index_key, word[:MAX_PREFIX]) for word in words(query)[:MAX_WORDS]})


def seal_text(key: DataKey, kind: str, user_id: str, contact_id: object,
              text: str | None) -> tuple[bytes | None, bytes | None]:
    if text is None:
        return None, None
    return seal(key, kind, user_id, contact_id, text.encode())


def open_text(key: DataKey | None, kind: str, user_id: str, contact_id: object, ciphertext: bytes | None,
              nonce: bytes | None, sealed_at: datetime | None) -> str | None:
    """The name or notes, or None when there are none, or they were erased by a shred."""
    if ciphertext is None or sealed_at is None:
        return None
    plain, state = open_content(key, kind, user_id, contact_id, ciphertext, nonce, sealed_at)
    return plain.decode() if state == AVAILABLE and plain is not None else None


def contact_name(key: DataKey | None, row, contact_id_field: str = "id") -> str | None:
    """The name of the contact a row describes (a contact, or a conversation joined to one)."""
    return open_text(key, "contact-name", row["user_id"], row[contact_id_field], row["name_ciphertext"],
                     row["name_nonce"], row["name_sealed_at"])
