"""Every typed key of application and request state, in one place.

Sub-applications read app state through `request.config_dict[key]`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web
from multidict import MultiDictProxy

from commpro.settings import Config

if TYPE_CHECKING:  # for annotations only: both modules import this one
    from commpro.dbhealth import DatabaseHealth
    from commpro.events import EventHub
    from commpro.keys import KeyRing
    from commpro.metrics import Metrics
    from commpro.sandbox.state import SandboxState
    from commpro.twilio_gateway import TwilioGateway

config_key = web.AppKey("config_key", Config)
pool_key = web.AppKey("pool_key", asyncpg.Pool)
twilio_key: web.AppKey[TwilioGateway] = web.AppKey("twilio_key")
# Background tasks by name, for shutdown and for /status.
tasks_key = web.AppKey("tasks_key", dict[str, asyncio.Task])
started_at_key = web.AppKey("started_at_key", float)
sandbox_state_key: web.AppKey[SandboxState] = web.AppKey("sandbox_state_key")
keyring_key: web.AppKey[KeyRing] = web.AppKey("keyring_key")
# Set when inbound media is waiting, so the fetcher need not wait for its next round.
media_wake_key = web.AppKey("media_wake_key", asyncio.Event)
# Notified after each round of the media fetcher, for whoever waits on a download.
media_round_key = web.AppKey("media_round_key", asyncio.Condition)
# Set when an alert waits for its webhook delivery.
alert_wake_key = web.AppKey("alert_wake_key", asyncio.Event)
hub_key: web.AppKey[EventHub] = web.AppKey("hub_key")
metrics_key: web.AppKey[Metrics] = web.AppKey("metrics_key")
db_health_key: web.AppKey[DatabaseHealth] = web.AppKey("db_health_key")

request_id_key = web.RequestKey("request_id_key", str)
# The verified JWT claims of the caller; absent on routes that need no JWT.
claims_key = web.RequestKey("claims_key", dict[str, Any])
# The form Twilio posted, read once by the webhook guard.
webhook_form_key = web.RequestKey("webhook_form_key", MultiDictProxy[str])
