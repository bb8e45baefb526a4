"""Every typed key of application and request state, in one place.

Sub-applications read app state through `request.config_dict[key]`.

This module types only third-party objects and Protocols, and imports no module of ours: every
feature imports it, so it must import none of them, or cycles form through it. Each Protocol
says what its key holds and names the class that provides it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import aiohttp
import asyncpg
from aiohttp import web
from multidict import MultiDictProxy


class Settings(Protocol):
    """commpro.settings.Config: one frozen dataclass per section of config.toml (config.twilio,
    config.server, ...), and the properties derived from them."""

    def __getattr__(self, section: str) -> Any: ...


class Gateway(Protocol):
    """commpro.twilio_gateway.TwilioGateway: the twilio client and the policy around it."""

    client: Any  # twilio.rest.Client
    mode: str  # "sandbox" or "live"

    async def call(self, operation: str, fn: Any) -> Any: ...
    async def open_media(self, url: str) -> aiohttp.ClientResponse: ...


class Hub(Protocol):
    """commpro.events.EventHub: the WebSocket subscribers of this process, fed by NOTIFY."""

    def subscribe(self, user_id: str) -> Any: ...
    def unsubscribe(self, subscriber: Any) -> None: ...
    def dispatch(self, event: dict[str, Any]) -> None: ...


class Keys(Protocol):
    """commpro.keys.KeyRing: the master keys and the per-user data keys they wrap."""

    current_id: str

    def cached_key(self, user_id: str) -> Any: ...
    async def data_key(self, conn: asyncpg.Connection, user_id: str, *, create: bool) -> Any: ...


class Owners(Protocol):
    """commpro.numbers.owners.NumberOwners: the numbers' owners last seen, checked by each statement."""

    def get(self, e164: str) -> Any: ...
    def forget(self, e164: str) -> None: ...
    async def look_up(self, conn: asyncpg.Connection, e164: str) -> Any: ...


class Jobs(Protocol):
    """commpro.jobs.JobQueue: the job kinds this process runs."""

    kinds: dict[str, Any]

    def wake(self, kind: str) -> None: ...


class Health(Protocol):
    """commpro.dbhealth.DatabaseHealth: whether the database is down, confirmed by a probe."""

    @property
    def down(self) -> bool: ...

    def suspect(self, exc: BaseException) -> None: ...


class Meters(Protocol):
    """commpro.metrics.Metrics: the Prometheus registry and the service's metrics in it."""

    registry: Any  # prometheus_client.CollectorRegistry
    batch_sizes: Any  # a Histogram by batch kind
    batch_failures: Any  # a Counter by batch kind

    def job_succeeded(self, name: str) -> None: ...


class Batch(Protocol):
    """commpro.batcher.Batcher: applies concurrent webhooks of one kind in one transaction."""

    async def submit(self, item: Any) -> Any: ...


config_key = web.AppKey("config_key", Settings)
pool_key = web.AppKey("pool_key", asyncpg.Pool)
twilio_key = web.AppKey("twilio_key", Gateway)
# Background tasks by name, for shutdown and for /status.
tasks_key = web.AppKey("tasks_key", dict[str, asyncio.Task])
started_at_key = web.AppKey("started_at_key", float)
keyring_key = web.AppKey("keyring_key", Keys)
number_owners_key = web.AppKey("number_owners_key", Owners)
# The job kinds this process runs (commpro.jobs), and how to wake their loops.
jobs_key = web.AppKey("jobs_key", Jobs)
hub_key = web.AppKey("hub_key", Hub)
metrics_key = web.AppKey("metrics_key", Meters)
# On a sub-application mounted beside the service that checks its own credentials (the Twilio
# sandbox of development): the service's JWT middleware leaves its routes to it.
own_auth_key = web.AppKey("own_auth_key", bool)
# The database's health as requests and loops see it (commpro.dbhealth).
db_health_key = web.AppKey("db_health_key", Health)
# Group commit of the voice and message status callbacks and of inbound messages (commpro.batcher).
call_status_batcher_key = web.AppKey("call_status_batcher_key", Batch)
message_status_batcher_key = web.AppKey("message_status_batcher_key", Batch)
inbound_sms_batcher_key = web.AppKey("inbound_sms_batcher_key", Batch)

request_id_key = web.RequestKey("request_id_key", str)
# The verified JWT claims of the caller; absent on routes that need no JWT.
claims_key = web.RequestKey("claims_key", dict[str, Any])
# The form Twilio posted, read once by the webhook guard.
webhook_form_key = web.RequestKey("webhook_form_key", MultiDictProxy[str])
