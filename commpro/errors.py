"""Domain errors, and the one middleware that turns every error into the JSON error body.

Handlers and stores raise AppError subclasses; nothing else builds error bodies. The body is
always {"error": {"code": "...", "message": "...", "details": ...}}.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from aiohttp import web

from commpro.appkeys import db_health_key, request_id_key
from commpro.dbhealth import RETRY_AFTER_S, is_outage

log = structlog.get_logger("commpro.errors")


class AppError(Exception):
    status = 500
    code = "internal"
    message = "Internal server error"

    def __init__(self, message: str | None = None, *, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}


def rebuild_error(status: int, error: dict[str, Any]) -> AppError:
    """An error as it was first answered (an Idempotency-Key replay), to be raised again."""
    exc = AppError(error.get("message"), details=error.get("details"))
    exc.status, exc.code = status, error.get("code", "error")
    return exc


class ValidationError(AppError):
    """400. `details` maps each bad field to what is wrong with it."""

    status, code, message = 400, "validation_failed", "The request is not valid"


class BadRequest(AppError):
    status, code, message = 400, "bad_request", "The request is malformed"


class Unauthorized(AppError):
    status, code, message = 401, "unauthorized", "Authentication required"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="commpro"'})
        super().__init__(message, **kwargs)


class PaymentRequired(AppError):
    status, code, message = 402, "payment_required", "The Twilio account is inactive or out of funds"


class Forbidden(AppError):
    status, code, message = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, code, message = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, message = 409, "conflict", "Conflict"


class PayloadTooLarge(AppError):
    status, code, message = 413, "payload_too_large", "The request body is too large"


class UnsupportedMediaType(AppError):
    status, code, message = 415, "unsupported_media_type", "Unsupported media type"


class UpgradeRequired(AppError):
    status, code, message = 426, "upgrade_required", "This endpoint speaks WebSocket only"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Upgrade": "websocket"})
        super().__init__(message, **kwargs)


class Unprocessable(AppError):
    status, code, message = 422, "unprocessable", "The request cannot be processed"


class TooManyRequests(AppError):
    status, code, message = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after_s: int, message: str | None = None) -> None:
        super().__init__(message, **_retry_after(retry_after_s))


def _retry_after(seconds: int) -> dict[str, Any]:
    """An error's details and headers that say when to try again."""
    return {"details": {"retryAfterSec": seconds}, "headers": {"Retry-After": str(seconds)}}


class BadGateway(AppError):
    status, code, message = 502, "upstream_error", "The upstream service answered with an error"


class ServiceUnavailable(AppError):
    status, code, message = 503, "unavailable", "The service is unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code, message = "database_unavailable", "The database is unavailable: retry shortly"

    def __init__(self) -> None:
        super().__init__(**_retry_after(RETRY_AFTER_S))


class TransactionConflict(ServiceUnavailable):
    code, message = "transaction_conflict", "A concurrent change got in the way: retry shortly"

    def __init__(self) -> None:
        super().__init__(**_retry_after(CONFLICT_RETRY_AFTER_S))


# A deadlock or a serialization failure: PostgreSQL rolled the transaction back whole, and the
# same request a second later usually succeeds. Not the client's fault, nor a bug to trace.
_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
CONFLICT_RETRY_AFTER_S = 1


class GatewayTimeout(AppError):
    status, code, message = 504, "upstream_timeout", "The upstream service did not answer in time"


# aiohttp raises its own HTTPExceptions for routing and body limits; they get our body too.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _render(exc: AppError) -> web.Response:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj).decode()


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AppError as exc:
        return _render(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like pass through untouched
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "error"), exc.reason, None, headers)
    except Exception as exc:
        if is_outage(exc):
            # The database is out of reach: a retryable 503, and one log line per state change
            # (the health tracker's), not a traceback per request.
            health = request.config_dict.get(db_health_key)
            if health is not None:
                health.suspect(exc)
            return _render(DatabaseUnavailable())
        if isinstance(exc, _CONFLICTS):
            # Where, and PostgreSQL's detail (the processes and lock types, no values): a deadlock
            # that recurs says a lock order is broken somewhere.
            log.warning("transaction_conflict", error=type(exc).__name__, path=request.path,
                        detail=getattr(exc, "detail", None), request_id=request.get(request_id_key))
            return _render(TransactionConflict())
        # Logged with its traceback; the client learns nothing but the request id.
        log.exception("unhandled_error", request_id=request.get(request_id_key))
        return error_response(500, "internal", "Internal server error",
                              {"requestId": request.get(request_id_key)})
