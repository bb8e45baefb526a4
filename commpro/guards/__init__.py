"""Request guards shared by the create endpoints: per-user rate limits and Idempotency-Key."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.auth import user_id
from commpro.errors import AppError, Conflict, TooManyRequests, Unprocessable, rebuild_error
from commpro.guards import store
from commpro.jobs import Kind, retention_kind
from commpro.settings import Config
from commpro.validation import header_token

MAX_KEY_LENGTH = 255
PURGE_BATCH = 1000
# Refusals that a later retry may not meet (limit, account funds): not remembered for the key.
RETRYABLE = frozenset({402, 429})
REPLAYED = {"Idempotent-Replayed": "true"}


async def spend(pool: asyncpg.Pool, user: str, name: str, per_minute: int) -> None:
    """Spend one of `user`'s `per_minute` tokens for `name`, or raise 429 with Retry-After."""
    async with pool.acquire() as conn:
        wait_s = await store.spend_token(conn, user, name, per_minute)
    if wait_s:
        raise TooManyRequests(wait_s, f"Limit of {per_minute} per minute reached")


async def rate_limit(request: web.Request, name: str, per_minute: int) -> None:
    """spend() for the caller of `request`."""
    await spend(request.config_dict[pool_key], user_id(request), name, per_minute)


Bind = Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]]
# What a create returns: 201 (done, the answer is final) or 202 (Twilio's answer never came:
# retries answer the row as it then stands, never the 202 again).
Create = Callable[[Bind], Awaitable[tuple[int, dict[str, Any]]]]
Replay = Callable[[uuid.UUID], Awaitable[tuple[int, dict[str, Any]]]]
UNCONFIRMED = 202


async def _no_key(_conn: asyncpg.Connection, _resource_id: uuid.UUID) -> None:
    pass


async def idempotent(request: web.Request, scope: str, body: dict[str, Any], create: Create,
                     replay: Replay) -> web.Response:
    """Run `create` once per Idempotency-Key.

    `create(bind)` calls `bind(conn, id)` in the transaction that inserts its row, before asking
    Twilio. The same key and body then get: the first answer again when it was final; the bound
    row as it stands (`replay(id)`) when Twilio's answer never came or the first request died
    after binding; a 409 while the first request is in flight (its lease); a fresh run when the
    first died before binding. The same key with another body is refused (422). A retry never
    reaches Twilio a second time for a bound row.
    """
    key = header_token(request, "Idempotency-Key", MAX_KEY_LENGTH)
    if key is None:
        status, payload = await create(_no_key)
        return web.json_response(payload, status=status)
    user = user_id(request)
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    pool = request.config_dict[pool_key]
    settings = request.config_dict[config_key].idempotency
    async with pool.acquire() as conn:
        row = await store.claim_idempotency_key(conn, user, scope, key, digest, settings.lease_s)
    if not row["owner"]:
        return await _answer_existing(row, digest, replay)

    async def bind(conn: asyncpg.Connection, resource_id: uuid.UUID) -> None:
        await store.bind_idempotency_key(conn, user, scope, key, resource_id)

    try:
        status, payload = await create(bind)
    except AppError as exc:
        if exc.status >= 500 or exc.status in RETRYABLE:
            # Worth retrying with the same key later, and nothing reached Twilio (an unknown
            # outcome is a 202, never an error): forget it, row and all.
            async with pool.acquire() as conn:
                await store.release_idempotency_key(conn, user, scope, key, bound_too=True)
            raise
        error = {"code": exc.code, "message": exc.message, "details": exc.details}
        async with pool.acquire() as conn:
            await store.store_idempotent_response(conn, user, scope, key, exc.status, error)
        raise
    except BaseException:
        # Cancelled or failed mid-way: a key bound to a committed row stays (that row may have
        # reached Twilio; a retry answers it once the lease lapses); an unbound one is forgotten.
        async with pool.acquire() as conn:
            await store.release_idempotency_key(conn, user, scope, key)
        raise
    async with pool.acquire() as conn:
        await store.store_idempotent_response(conn, user, scope, key, status,
                                              None if status == UNCONFIRMED else payload)
    return web.json_response(payload, status=status)


async def _answer_existing(row: asyncpg.Record, digest: str, replay: Replay) -> web.Response:
    if row["request_hash"] != digest:
        raise Unprocessable("This Idempotency-Key was used with another request")
    if row["response"] is not None:
        if row["status_code"] >= 400:
            raise rebuild_error(row["status_code"], row["response"])
        return web.json_response(row["response"], status=row["status_code"], headers=REPLAYED)
    if row["in_flight"] or row["resource_id"] is None:
        raise Conflict("A request with this Idempotency-Key is still in progress")
    # Twilio's answer never came, or the request died after binding its row: the row says.
    status, payload = await replay(row["resource_id"])
    return web.json_response(payload, status=status, headers=REPLAYED)


async def delete_old_keys(conn: asyncpg.Connection, before: datetime) -> int:
    """Forget the keys claimed before `before` (never one in flight), in batches."""
    purged = 0
    while (batch := await store.purge_idempotency_keys(conn, before, PURGE_BATCH)) > 0:
        purged += batch
    return purged


def idempotency_retention(config: Config) -> Kind:
    """Keys are kept idempotency.retention_s, then purged (a recurring job)."""
    return retention_kind("idempotency-retention", delete_old_keys, config.idempotency.retention_s,
                          config.idempotency.sweep_interval_s)


def rate_limits_retention(config: Config) -> Kind:
    """A rate-limit bucket refills to full within a minute of its last spend, and a full bucket
    is what a missing row means, so a bucket idle for `jobs.rate_limit_idle_s` (at least 60) can
    go without changing any answer (a recurring job)."""
    return retention_kind("rate-limits-retention", store.delete_idle_buckets, config.jobs.rate_limit_idle_s,
                          config.jobs.retention_interval_s)
