"""SQL for the contacts API: listing with search and paging, one contact, and its update.

The rows the messaging webhooks and routes need (upsert on a message, opt-out) stay in
commpro/messages/store.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

CONTACT_COLUMNS = """
id, user_id, phone_number, opted_out, blocked, name_ciphertext, name_nonce, name_sealed_at,
notes_ciphertext, notes_nonce, notes_sealed_at, created_at, updated_at
"""

# $2: a phone-number prefix ('+336'), $3: the tags every matching name holds; either or none.
LIST_CONTACTS = f"""
SELECT {CONTACT_COLUMNS} FROM contacts
WHERE user_id = $1
  AND ($2::text IS NULL OR phone_number LIKE $2 || '%')
  AND ($3::text[] IS NULL OR name_index @> $3::text[])
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $6
"""


async def list_contacts(conn: asyncpg.Connection, user_id: str, number_prefix: str | None,
                        name_tags: list[str] | None, before: tuple[datetime, uuid.UUID] | None,
                        limit: int) -> list[asyncpg.Record]:
    """Newest first. `number_prefix` holds only '+' and digits: nothing LIKE would read as a pattern."""
    before_at, before_id = before or (None, None)
    return await conn.fetch(LIST_CONTACTS, user_id, number_prefix, name_tags, before_at, before_id, limit)


GET_CONTACT = f"SELECT {CONTACT_COLUMNS} FROM contacts WHERE user_id = $1 AND id = $2"


async def get_contact(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(GET_CONTACT, user_id, contact_id)


# Each of name and notes changes only when its flag is set; NULL clears it.
UPDATE_CONTACT = f"""
UPDATE contacts SET
    name_ciphertext = CASE WHEN $3 THEN $4 ELSE name_ciphertext END,
    name_nonce = CASE WHEN $3 THEN $5 ELSE name_nonce END,
    name_sealed_at = CASE WHEN $3 THEN (CASE WHEN $4::bytea IS NULL THEN NULL ELSE now() END) ELSE name_sealed_at END,
    name_index = CASE WHEN $3 THEN $6::text[] ELSE name_index END,
    notes_ciphertext = CASE WHEN $7 THEN $8 ELSE notes_ciphertext END,
    notes_nonce = CASE WHEN $7 THEN $9 ELSE notes_nonce END,
    notes_sealed_at = CASE WHEN $7 THEN (CASE WHEN $8::bytea IS NULL THEN NULL ELSE now() END)
                      ELSE notes_sealed_at END,
    blocked = coalesce($10, blocked),
    updated_at = now()
WHERE user_id = $1 AND id = $2
RETURNING {CONTACT_COLUMNS}
"""


async def update_contact(conn: asyncpg.Connection, user_id: str, contact_id: uuid.UUID,
                         name: tuple[bytes | None, bytes | None, list[str]] | None,
                         notes: tuple[bytes | None, bytes | None] | None,
                         blocked: bool | None) -> asyncpg.Record | None:
    """`name` is (ciphertext, nonce, index) and `notes` (ciphertext, nonce) when they change;
    None leaves each as it is. None when the user has no such contact."""
    name_ct, name_nonce, index = name or (None, None, [])
    notes_ct, notes_nonce = notes or (None, None)
    return await conn.fetchrow(UPDATE_CONTACT, user_id, contact_id, name is not None, name_ct, name_nonce, index,
                               notes is not None, notes_ct, notes_nonce, blocked)
