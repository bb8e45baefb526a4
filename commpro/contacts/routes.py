"""The contacts API: list and search a user's contacts, read one, name, annotate or block it."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from aiohttp import web

from commpro.appkeys import keyring_key, pool_key
from commpro.auth import user_id
from commpro.contacts import store
from commpro.contacts.names import contact_name, name_index, open_text, query_tags, seal_text, words
from commpro.errors import NotFound, ValidationError
from commpro.events import store as events
from commpro.keys import DataKey
from commpro.messages.content import reading_key
from commpro.validation import Fields, decode_cursor, iso, json_body, next_cursor, parse_uuid

routes = web.RouteTableDef()
MAX_NAME = 100
MAX_NOTES = 2000
# A query of only a '+', digits and the usual separators is a phone-number prefix.
NUMBER_QUERY = re.compile(r"^\+?[0-9][0-9 ().-]*$")


def contact_json(row: asyncpg.Record, key: DataKey | None) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "phoneNumber": row["phone_number"],
        # null when unnamed, or erased with the user's key.
        "name": contact_name(key, row),
        "notes": open_text(key, "contact-notes", row["user_id"], row["id"], row["notes_ciphertext"],
                           row["notes_nonce"], row["notes_sealed_at"]),
        "blocked": row["blocked"],
        "optedOut": row["opted_out"],
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
    }


@routes.get("/api/contacts", name="list_contacts")
async def list_contacts(request: web.Request) -> web.Response:
    """?q= searches names (every word a prefix of a word of the name, case and accents ignored)
    or, when it is a '+' and digits, phone numbers by prefix; ?limit=, ?cursor= page."""
    fields = Fields(request.query, allowed=("q", "limit", "cursor"))
    limit = fields.integer("limit", required=False, low=1, high=200, default=50)
    query = fields.string("q", required=False, min_len=1, max_len=MAX_NAME)
    fields.check()
    before = decode_cursor(request.query["cursor"]) if "cursor" in request.query else None
    user = user_id(request)
    number_prefix, name_query = None, None
    if query is not None:
        if NUMBER_QUERY.match(query.strip()):
            number_prefix = "+" + re.sub(r"[^0-9]", "", query)
        elif words(query):
            name_query = query
        else:
            raise ValidationError(details={"q": "must contain letters or digits"})
    async with request.config_dict[pool_key].acquire() as conn:
        key = await reading_key(request.config_dict[keyring_key], conn, user)
        tags = None
        if name_query is not None:
            if key is None:  # no key: no name can match
                return web.json_response({"contacts": [], "nextCursor": None})
            tags = query_tags(key, name_query)
        rows = await store.list_contacts(conn, user, number_prefix, tags, before, limit)
    return web.json_response({"contacts": [contact_json(r, key) for r in rows],
                              "nextCursor": next_cursor(rows, limit)})


@routes.get("/api/contacts/{id}", name="get_contact")
async def get_contact(request: web.Request) -> web.Response:
    contact_id = parse_uuid(request.match_info["id"])
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn:
        row = await store.get_contact(conn, user, contact_id)
        if row is None:
            raise NotFound("No such contact")
        key = await reading_key(request.config_dict[keyring_key], conn, user)
    return web.json_response(contact_json(row, key))


@routes.patch("/api/contacts/{id}", name="update_contact")
async def update_contact(request: web.Request) -> web.Response:
    """{name?, notes?, blocked?}: null clears the name or notes. A blocked contact's messages are
    still stored, but arrive read and raise no event."""
    contact_id = parse_uuid(request.match_info["id"])
    data = await json_body(request)
    fields = Fields(data, allowed=("name", "notes", "blocked"))
    name = fields.string("name", required=False, max_len=MAX_NAME, nullable=True)
    notes = fields.string("notes", required=False, min_len=0, max_len=MAX_NOTES, nullable=True)
    blocked = fields.boolean("blocked", required=False)
    if name is not None and not name.strip():
        fields.errors["name"] = "must not be blank"
    if not data:
        fields.errors["body"] = "give at least one of name, notes, blocked"
    fields.check()
    user = user_id(request)
    async with request.config_dict[pool_key].acquire() as conn, conn.transaction():
        key = await request.config_dict[keyring_key].data_key(conn, user, create=True)
        new_name = None
        if "name" in data:
            clean = name.strip() if name is not None else None
            new_name = (*seal_text(key, "contact-name", user, contact_id, clean), name_index(key, clean))
        new_notes = seal_text(key, "contact-notes", user, contact_id, notes) if "notes" in data else None
        row = await store.update_contact(conn, user, contact_id, new_name, new_notes, blocked)
        if row is None:
            raise NotFound("No such contact")
        await events.publish(conn, user, "contact.updated", {"contactId": str(contact_id)})
    return web.json_response(contact_json(row, key))
