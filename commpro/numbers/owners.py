"""Which user owns each number Twilio's webhooks name, kept in memory between messages.

The inbound SMS webhook needs a number's owner before its statement (the owner's data key seals
the body), and looking it up cost a round trip per message (about 20 % of the webhook's CPU in
a profile). A remembered owner is only a guess: the statement that stores the message checks
that the number still has that id and that owner (messages/inbound_store.py), and stores nothing
otherwise; the webhook then forgets the guess, looks the number up again and seals once more.
So a stale entry costs one more statement, never a message stored under the wrong user.

Only numbers that exist are remembered (a number added later is found at once), and at most
`max_size` of them, the oldest forgotten first.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import asyncpg

from commpro.numbers import store


class Owner(NamedTuple):
    id: uuid.UUID
    user_id: str


class NumberOwners:
    def __init__(self, max_size: int = 10_000) -> None:
        self._max = max_size
        self._owners: dict[str, Owner] = {}

    def get(self, e164: str) -> Owner | None:
        """The owner last seen, unchecked: the statement using it checks it."""
        return self._owners.get(e164)

    def forget(self, e164: str) -> None:
        self._owners.pop(e164, None)

    async def look_up(self, conn: asyncpg.Connection, e164: str) -> Owner | None:
        """The number's owner now (remembered), or None when no one has it."""
        row = await store.get_number_owner(conn, e164)
        if row is None:
            self._owners.pop(e164, None)
            return None
        if e164 not in self._owners and len(self._owners) >= self._max:
            self._owners.pop(next(iter(self._owners)))
        owner = self._owners[e164] = Owner(row["id"], row["user_id"])
        return owner
