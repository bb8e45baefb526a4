"""The application factory: one aiohttp app, its resources in cleanup contexts."""

from __future__ import annotations

import time

from aiohttp import web

from commpro import openapi, ops
from commpro.appkeys import (
    call_status_batcher_key,
    config_key,
    inbound_sms_batcher_key,
    jobs_key,
    keyring_key,
    message_status_batcher_key,
    metrics_key,
    number_owners_key,
    started_at_key,
    tasks_key,
)
from commpro.auth import auth_middleware
from commpro.batcher import batcher_ctx
from commpro.calls import recordings as call_recordings
from commpro.calls import routes as call_routes
from commpro.calls import screening as call_screening
from commpro.calls import webhooks as call_webhooks
from commpro.calls.prices import call_prices
from commpro.console import routes as console_routes
from commpro.contacts import routes as contact_routes
from commpro.db import pool_ctx
from commpro.dbhealth import health_ctx
from commpro.errors import error_middleware
from commpro.events import events_retention, hub_ctx
from commpro.events import routes as event_routes
from commpro.guards import idempotency_retention, rate_limits_retention
from commpro.jobs import JobQueue, jobs_ctx
from commpro.jobs.retention import jobs_retention
from commpro.keys import KeyRing
from commpro.logs import access_middleware
from commpro.messages import media as message_media
from commpro.messages import routes as message_routes
from commpro.messages import webhooks as message_webhooks
from commpro.messages.erasure import twilio_erasure
from commpro.messages.prices import message_prices
from commpro.metrics import Metrics
from commpro.numbers import greetings as number_greetings
from commpro.numbers import routes as number_routes
from commpro.numbers.owners import NumberOwners
from commpro.quality import routes as quality_routes
from commpro.quality.delivery import alert_webhook
from commpro.quality.poller import voice_insights
from commpro.settings import Config
from commpro.twilio_gateway import TwilioGateway, twilio_ctx
from commpro.unconfirmed import unconfirmed_sweep
from commpro.webhooks import webhook_guard

# Every kind of background job (commpro.jobs): a factory from the config to its Kind.
JOB_KINDS = (
    call_prices,
    message_prices,
    message_media.media_fetch,
    voice_insights,
    alert_webhook,
    twilio_erasure,
    unconfirmed_sweep,
    events_retention,
    idempotency_retention,
    rate_limits_retention,
    jobs_retention,
)


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
    app[number_owners_key] = NumberOwners()
    app[metrics_key] = Metrics()
    app[jobs_key] = JobQueue()
    for kind in JOB_KINDS:
        app[jobs_key].register(kind(config))
    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(health_ctx)
    app.cleanup_ctx.append(twilio_ctx(twilio))
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(jobs_ctx)
    # After the pool's: on shutdown each batcher applies what it holds before the pool closes.
    # Each applies its batch in one statement (sql/0012), its own transaction, one batch at a
    # time unless 16 webhooks wait: a batch costs PostgreSQL a fixed half millisecond or so of
    # CPU (the function's statements, the commit) beside about 75 µs per item, so fewer, larger
    # batches cost less. Two at a time always made batches of about 9 under the bench's load
    # instead of 13, and a second batch for the same user only waited on the first's event
    # counter anyway; one at a time went from 1.10x to 1.38x the reference (S1) and from 0.42x
    # to 0.97x (inbound SMS), in paired rounds on the same (busy) machine.
    # A second batch once 16 wait: a batch held up (a slow commit, a row lock behind an API
    # transaction) no longer holds up every webhook of its kind. Under S1 it seldom starts;
    # in 10 paired rounds on a busy machine it gave 1.28x the reference against 1.16x, p99 37 ms
    # against 89, the same PostgreSQL CPU per callback. Connections: a batch that committed
    # gives its own back after starting the next, so a batcher holds up to in_flight + 1 of the
    # pool for a moment; inbound SMS (no gain from a second batch beyond the noise, measured
    # again with `make ab`: README, Benchmarks) keeps one at a time: at most 3 + 3 + 2 of
    # database.pool_max's 10 in a storm of all three kinds.
    batches = {"one_statement": True, "in_flight": 2, "overlap_at": 16}
    app.cleanup_ctx.append(batcher_ctx(call_status_batcher_key, "call-status", call_webhooks.status_batch, **batches))
    app.cleanup_ctx.append(batcher_ctx(message_status_batcher_key, "message-status", message_webhooks.status_batch,
                                       **batches))
    # Inbound messages too (sql/0013), rows in one order and the event counters last.
    app.cleanup_ctx.append(batcher_ctx(inbound_sms_batcher_key, "inbound-sms", message_webhooks.inbound_batch,
                                       one_statement=True))
    app.add_routes(ops.routes)
    app.add_routes(console_routes.routes)
    app.add_routes(openapi.routes)
    openapi.add_rendered_view(app)
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
    app.add_routes(contact_routes.routes)
    # In development the Twilio sandbox is mounted beside it by commpro.devserver, not here. The
    # console's controls of it (over HTTP) exist only then, never in production.
    if config.twilio.sandbox:
        app.add_routes(console_routes.sandbox_routes)
    return app
