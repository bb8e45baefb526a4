"""The one owner of the twilio Client: its lifetime, a deadline on every call, error mapping.

`AsyncTwilioHttpClient` ignores its constructor timeout, so each call runs under
`asyncio.timeout`. Twilio's errors (`TwilioRestException.code`) become domain errors here and
nowhere else; callers that care about one code read `exc.twilio_code`.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiohttp
import structlog
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from yarl import URL

from commpro.appkeys import config_key, metrics_key, twilio_key
from commpro.errors import (
    AppError,
    BadGateway,
    GatewayTimeout,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
)
from commpro.settings import TwilioSettings

log = structlog.get_logger("commpro.twilio")
T = TypeVar("T")

# twilio 9.x still hands aiohttp 3.14 a BasicAuth and `auth=`: two DeprecationWarnings on every
# request. Only those two messages are silenced; any other warning still shows.
TWILIO_DEPRECATIONS = (r"BasicAuth is deprecated", r"The 'auth' parameter is deprecated")

# Account inactive, suspended or out of funds: the caller cannot fix the request.
ACCOUNT_CODES = frozenset({10001, 10002, 20005, 20008, 30002})
# Throttled by Twilio.
THROTTLE_CODES = frozenset({20429, 14107, 30001})


def silence_twilio_deprecations() -> None:
    for message in TWILIO_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)


class TwilioError(AppError):
    """Twilio refused the request (422); `twilio_code` is Twilio's own error code."""

    status, code, message = 422, "twilio_rejected", "Twilio refused the request"

    def __init__(self, twilio_code: int | None, message: str, status: int = 422, code: str | None = None):
        super().__init__(message, details={"twilioCode": twilio_code})
        self.twilio_code = twilio_code
        self.status = status
        if code:
            self.code = code


class TwilioUnanswered(GatewayTimeout):
    """The request may have reached Twilio, and no answer says what Twilio did with it: the
    deadline passed, the connection dropped after the request was sent, or Twilio answered 5xx.
    For a create this is not a failure: the resource may exist (see calls/service.py)."""

    def __init__(self, message: str, status: int = 504, code: str = "upstream_timeout"):
        super().__init__(message)
        self.status, self.code = status, code


def map_twilio_error(exc: TwilioRestException, operation: str) -> AppError:
    code = exc.code
    if code in ACCOUNT_CODES:
        return TwilioError(code, PaymentRequired.message, PaymentRequired.status, PaymentRequired.code)
    if code in THROTTLE_CODES or exc.status == 429:
        return ServiceUnavailable("Twilio is throttling requests, try again shortly",
                                  details={"twilioCode": code}, headers={"Retry-After": "5"})
    if exc.status == 404 or code == 20404:
        return NotFound(f"Twilio has no such resource ({operation})")
    if exc.status in (401, 403) or code == 20003:
        # Our credentials are wrong: the caller can do nothing about it.
        return BadGateway("Twilio refused our credentials", details={"twilioCode": code})
    if exc.status >= 500:
        return TwilioUnanswered("Twilio answered with an error", status=502, code="upstream_error")
    # Twilio's own message is safe to pass on: it names the problem, not our secrets.
    return TwilioError(code, str(exc.msg or "Twilio refused the request"))


class TwilioGateway:
    """The client and the policy around it. `mode` is 'sandbox' or 'live'."""

    def __init__(self, client: Client, http: AsyncTwilioHttpClient, settings: TwilioSettings) -> None:
        self.client = client
        self.http = http
        self.timeout_s = settings.timeout_s
        self.mode = "sandbox" if settings.sandbox else "live"
        self.account_sid = settings.account_sid
        self.api_base_url = (settings.api_base_url or "https://api.twilio.com").rstrip("/")
        self._authorization = aiohttp.encode_basic_auth(settings.account_sid, settings.auth_token)
        self.metrics = None  # set by the cleanup context when the app has metrics

    def _redirect_allowed(self, target: URL) -> bool:
        """Any https host (Twilio's CDN, or S3 for media stored before Twilio enforced HTTP
        authentication); plain http only to the sandbox."""
        if not target.host:
            return False
        return target.scheme == "https" or (target.scheme == "http" and self.mode == "sandbox")

    async def call(self, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one Twilio API call under the deadline; raise domain errors only."""
        started, outcome = time.perf_counter(), "error"
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await fn()
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            log.warning("twilio_timeout", operation=operation, timeout_s=self.timeout_s)
            raise TwilioUnanswered(f"Twilio did not answer within {self.timeout_s:g}s") from None
        except TwilioRestException as exc:
            outcome = f"http_{exc.status}"
            log.info("twilio_error", operation=operation, status=exc.status, twilio_code=exc.code)
            raise map_twilio_error(exc, operation) from None
        except aiohttp.ClientConnectorError as exc:
            # Refused before a byte was sent: Twilio did nothing.
            outcome = "unreachable"
            log.warning("twilio_unreachable", operation=operation, error=type(exc).__name__)
            raise ServiceUnavailable("Twilio is unreachable") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Dropped after the request may have been read.
            outcome = "dropped"
            log.warning("twilio_dropped", operation=operation, error=type(exc).__name__)
            raise TwilioUnanswered("Twilio dropped the connection", status=503, code="unavailable") from None
        finally:
            if self.metrics is not None:
                self.metrics.twilio.labels(operation, outcome).observe(time.perf_counter() - started)

    async def open_media(self, url: str) -> aiohttp.ClientResponse:
        """GET a recording or media URL Twilio gave us, with the account's credentials.

        Only URLs under the Twilio API base are fetched with them: a URL from a webhook or the
        database never sends our credentials anywhere else. Twilio answers media URLs with a
        redirect to where the file is (mms.twiliocdn.com, or s3-external-1.amazonaws.com for
        older media): since Twilio's authenticated host chose it, that one hop is followed to
        any https host, and without credentials. The caller streams the body and releases the
        response.
        """
        if not url.startswith(self.api_base_url + "/"):
            raise BadGateway("Refusing to fetch a media URL outside Twilio")
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self.http.session.get(url, headers={"Authorization": self._authorization},
                                                   allow_redirects=False)
                if resp.status in (301, 302, 303, 307, 308):
                    target = URL(url).join(URL(resp.headers.get("Location", "")))
                    resp.release()
                    if not self._redirect_allowed(target):
                        raise BadGateway("Twilio redirected media to a URL that is not https")
                    resp = await self.http.session.get(target, allow_redirects=False)
        except TimeoutError:
            raise GatewayTimeout(f"Twilio did not answer within {self.timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError):
            raise ServiceUnavailable("Twilio is unreachable") from None
        if resp.status != 200:
            resp.release()
            if resp.status == 404:
                raise NotFound("Twilio no longer has this media")
            raise BadGateway("Twilio answered with an error", details={"status": resp.status})
        return resp

    async def close(self) -> None:
        await self.http.close()


def build_gateway(settings: TwilioSettings) -> TwilioGateway:
    """Must run inside the event loop: the HTTP client opens its aiohttp session here."""
    silence_twilio_deprecations()
    http = AsyncTwilioHttpClient()
    client = Client(settings.account_sid, settings.auth_token, http_client=http)
    if settings.api_base_url:
        client.api.base_url = settings.api_base_url
    if settings.insights_base_url:
        client.insights.base_url = settings.insights_base_url
    return TwilioGateway(client, http, settings)


def twilio_ctx(gateway: TwilioGateway | None = None):
    """Cleanup context for the gateway; an injected one (tests) is used and closed the same way."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gw = gateway or build_gateway(app[config_key].twilio)
        gw.metrics = app.get(metrics_key)
        app[twilio_key] = gw
        try:
            yield
        finally:
            await gw.close()
            log.info("twilio_closed", mode=gw.mode)

    return ctx
