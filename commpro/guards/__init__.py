"""Request guards shared by the create endpoints: per-user rate limits and Idempotency-Key."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from commpro.appkeys import pool_key
from commpro.auth import user_id
from commpro.errors import AppError, Conflict, TooManyRequests, Unprocessable, rebuild_error
from commpro.guards import store
from commpro.validation import header_token

MAX_KEY_LENGTH = 255
# Refusals that a later retry may not meet (limit, account funds): not remembered for the key.
RETRYABLE = frozenset({402, 429})


async def rate_limit(request: web.Request, name: str, per_minute: int) -> None:
    """Spend one of the caller's `per_minute` tokens for `name`, or raise 429 with Retry-After."""
    async with request.config_dict[pool_key].acquire() as conn:
        wait_s = await store.spend_token(conn, user_id(request), name, per_minute)
    if wait_s:
        raise TooManyRequests(wait_s, f"Limit of {per_minute} per minute reached")


async def idempotent(request: web.Request, scope: str, body: dict[str, Any],
                     create: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> web.Response:
    """Run `create` once per Idempotency-Key: the same key and body get the first response again,
    the same key with another body is refused (422), a key still in flight is a 409."""
    key = header_token(request, "Idempotency-Key", MAX_KEY_LENGTH)
    if key is None:
        status, payload = await create()
        return web.json_response(payload, status=status)
    user = user_id(request)
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    pool = request.config_dict[pool_key]
    async with pool.acquire() as conn:
        existing = await store.claim_idempotency_key(conn, user, scope, key, digest)
    if existing is not None:
        if existing["request_hash"] != digest:
            raise Unprocessable("This Idempotency-Key was used with another request")
        if existing["response"] is None:
            raise Conflict("A request with this Idempotency-Key is still in progress")
        if existing["status_code"] >= 400:
            raise rebuild_error(existing["status_code"], existing["response"])
        return web.json_response(existing["response"], status=existing["status_code"],
                                 headers={"Idempotent-Replayed": "true"})
    try:
        status, payload = await create()
    except AppError as exc:
        if exc.status >= 500 or exc.status in RETRYABLE:
            # Worth retrying with the same key later: forget it.
            async with pool.acquire() as conn:
                await store.release_idempotency_key(conn, user, scope, key)
            raise
        error = {"code": exc.code, "message": exc.message, "details": exc.details}
        async with pool.acquire() as conn:
            await store.store_idempotent_response(conn, user, scope, key, exc.status, error)
        raise
    except BaseException:
        async with pool.acquire() as conn:
            await store.release_idempotency_key(conn, user, scope, key)
        raise
    async with pool.acquire() as conn:
        await store.store_idempotent_response(conn, user, scope, key, status, payload)
    return web.json_response(payload, status=status)
