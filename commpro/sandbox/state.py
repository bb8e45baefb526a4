"""The sandbox's state: its records in PostgreSQL (sandbox/store.py), read and written through
the accessors below, and the knobs and counters of one process, which stay in memory.

In memory, per process: the test controls (account status, media failures, summary errors,
complete summaries, media redirect, create faults and their delay) and what tests count (summary
and call fetches, create requests, S3 downloads, erasures, deleted recordings, played audio),
with the lifecycle tasks this process plays and its HTTP session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from commpro.sandbox import store
from commpro.sandbox.config import SandboxConfig
from commpro.sandbox.records import (  # noqa: F401 - the records, where tests have always found them
    API_VERSION,
    SandboxCall,
    SandboxMedia,
    SandboxMessage,
    SandboxRecording,
    iso,
    new_sid,
    now,
    rfc2822,
    segments,
)


@dataclass
class SandboxState:
    config: SandboxConfig
    account_status: str = "active"
    # How many of the next media-host requests fail with a 500 (POST /_sandbox/control).
    media_failures: int = 0
    # Errors the next Voice Insights summary requests answer with, in order: 404 or 429.
    summary_errors: list[int] = field(default_factory=list)
    # Summaries are complete at once instead of after summary_complete_after_s.
    summaries_complete: bool = False
    # Summary requests by call SID, so tests can see that each was fetched once.
    summary_fetches: dict[str, int] = field(default_factory=dict)
    # Call fetches by SID (the price job's work).
    call_fetches: dict[str, int] = field(default_factory=dict)
    # Where media URLs redirect: "cdn" (the sandbox's media host) or "s3" (an S3-like host
    # under another name, as Twilio does for media stored before HTTP authentication).
    media_redirect: str = "cdn"
    # Media files served by the S3-like host.
    s3_downloads: int = 0
    # What was erased, in order: ("redact", message SID) and ("delete-media", media SID).
    erasures: list[tuple[str, str]] = field(default_factory=list)
    # Faults the next create requests meet, in order (sandbox/faults.py), and every create
    # request's form as it was received.
    create_faults: list[str] = field(default_factory=list)
    fault_delay_s: float = 1.0
    lifecycle_delay_s: float = 0.0
    create_requests: list[dict[str, str]] = field(default_factory=list)
    # Set when the sandbox stops: hung requests end.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # SIDs of the recordings deleted through the API, so tests can see Twilio's copy is gone.
    deleted_recordings: set[str] = field(default_factory=set)
    # What <Play> fetched: (url, HTTP status, Content-Type).
    played: list[tuple[str, int, str]] = field(default_factory=list)
    # Lifecycle tasks in flight, cancelled and awaited on shutdown.
    tasks: set[asyncio.Task] = field(default_factory=set)
    # Set by the cleanup context: the client session that posts callbacks, and the pool of the
    # sandbox's own connections to the database.
    session: Any = None
    pool: asyncpg.Pool | None = None

    @property
    def account_sid(self) -> str:
        return self.config.account_sid

    def db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the sandbox has not started: no database pool yet")
        return self.pool

    # Calls: written whole by the process that plays them, at each change.
    async def call(self, sid: str) -> SandboxCall | None:
        return await store.get_call(self.db(), sid, self.account_sid)

    async def calls_from(self, number: str) -> list[SandboxCall]:
        return await store.calls_from(self.db(), number)

    async def child_calls(self, parent_sid: str) -> list[SandboxCall]:
        return await store.child_calls(self.db(), parent_sid)

    async def save_call(self, call: SandboxCall) -> None:
        await store.save_call(self.db(), call)

    # Messages and media. A message read back holds its media's descriptions, not their bytes.
    async def message(self, sid: str) -> SandboxMessage | None:
        return await store.get_message(self.db(), sid, self.account_sid)

    async def messages_from(self, number: str) -> list[SandboxMessage]:
        return await store.messages_from(self.db(), number)

    async def add_message(self, message: SandboxMessage) -> None:
        await store.insert_message(self.db(), message)

    async def save_message(self, message: SandboxMessage) -> None:
        """Its status, times, error and price timing (never its body: see store.UPDATE_MESSAGE)."""
        await store.save_message_status(self.db(), message)

    async def media(self, sid: str) -> SandboxMedia | None:
        return await store.get_media(self.db(), sid, self.account_sid)

    async def add_media(self, media: SandboxMedia) -> None:
        await store.insert_media(self.db(), media)

    # Recordings.
    async def recording(self, sid: str) -> SandboxRecording | None:
        return await store.get_recording(self.db(), sid, self.account_sid)

    async def recordings_of(self, call_sid: str) -> list[SandboxRecording]:
        return await store.recordings_of(self.db(), call_sid)

    async def add_recording(self, rec: SandboxRecording) -> None:
        await store.insert_recording(self.db(), rec)

    async def delete_recording(self, sid: str) -> bool:
        return await store.delete_recording(self.db(), sid, self.account_sid)

    def spawn(self, coro, delay_s: float = 0.0) -> asyncio.Task:
        if delay_s > 0:
            coro = _after(delay_s, coro)
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


async def _after(delay_s: float, coro) -> None:
    try:
        await asyncio.sleep(delay_s)
    except asyncio.CancelledError:
        coro.close()
        raise
    await coro


sandbox_state_key = web.AppKey("sandbox_state_key", SandboxState)
