"""The application factory: one aiohttp app, its resources in cleanup contexts."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from commpro import ops
from commpro.appkeys import (
    alert_wake_key,
    config_key,
    keyring_key,
    media_round_key,
    media_wake_key,
    metrics_key,
    sandbox_state_key,
    started_at_key,
    tasks_key,
)
from commpro.auth import auth_middleware
from commpro.calls import recordings as call_recordings
from commpro.calls import routes as call_routes
from commpro.calls import screening as call_screening
from commpro.calls import webhooks as call_webhooks
from commpro.calls.prices import PRICES as CALL_PRICES
from commpro.db import pool_ctx
from commpro.errors import error_middleware
from commpro.events import hub_ctx, retention_job
from commpro.events import routes as event_routes
from commpro.keys import KeyRing
from commpro.logs import access_middleware
from commpro.messages import media as message_media
from commpro.messages import routes as message_routes
from commpro.messages import webhooks as message_webhooks
from commpro.messages.prices import PRICES as MESSAGE_PRICES
from commpro.metrics import Metrics
from commpro.numbers import greetings as number_greetings
from commpro.numbers import routes as number_routes
from commpro.prices import price_job
from commpro.quality import routes as quality_routes
from commpro.quality.delivery import delivery_job
from commpro.quality.poller import quality_job
from commpro.settings import Config
from commpro.twilio_gateway import TwilioGateway, twilio_ctx
from commpro.webhooks import webhook_guard


def create_app(config: Config, *, twilio: TwilioGateway | None = None) -> web.Application:
    """Build the service. `twilio` replaces the gateway built from config (tests only)."""
    app = web.Application(
        # Outermost first: the access line sees the final status, errors are rendered before
        # it, auth and the webhook guard run before any handler.
        middlewares=[access_middleware, error_middleware, auth_middleware, webhook_guard],
        client_max_size=config.server.max_body_bytes,
    )
    app[config_key] = config
    app[tasks_key] = {}
    app[started_at_key] = time.monotonic()
    app[keyring_key] = KeyRing(config.crypto)
    app[media_wake_key] = asyncio.Event()
    app[media_round_key] = asyncio.Condition()
    app[alert_wake_key] = asyncio.Event()
    app[metrics_key] = Metrics()
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(twilio_ctx(twilio))
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(retention_job(config.events.retention_interval_s))
    app.cleanup_ctx.append(price_job(CALL_PRICES, config.prices.poll_interval_s))
    app.cleanup_ctx.append(price_job(MESSAGE_PRICES, config.prices.poll_interval_s))
    app.cleanup_ctx.append(message_media.media_fetch_job(config.messages.fetch_interval_s))
    app.cleanup_ctx.append(quality_job(config.quality.poll_interval_s))
    app.cleanup_ctx.append(delivery_job(config.alerts.delivery_interval_s))
    app.add_routes(ops.routes)
    app.add_routes(event_routes.routes)
    app.add_routes(number_routes.routes)
    app.add_routes(number_greetings.routes)
    # Before the call routes: /api/calls/alerts is not a call id.
    app.add_routes(quality_routes.routes)
    app.add_routes(call_routes.routes)
    app.add_routes(call_webhooks.routes)
    app.add_routes(call_screening.routes)
    app.add_routes(call_recordings.routes)
    app.add_routes(message_routes.routes)
    app.add_routes(message_webhooks.routes)
    app.add_routes(message_media.routes)
    if config.twilio.sandbox:
        from commpro.sandbox import create_sandbox_app

        sandbox = create_sandbox_app(config)
        # Also reachable from the main app, for the tests that wait on its lifecycles.
        app[sandbox_state_key] = sandbox[sandbox_state_key]
        app.add_subapp("/_sandbox", sandbox)
    return app
