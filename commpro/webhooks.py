"""The guard in front of every /webhook/* route: size, form parsing and Twilio's signature.

Behind Railway's TLS proxy the URL this process sees (http://internal:PORT/...) is not the one
Twilio signed (https://public/...), so the URL is rebuilt from PUBLIC_BASE_URL + path + query.
The guard runs before the handler: a refused webhook writes nothing.

Twilio signs with HMAC-SHA1 under the account's auth token, or, when the account has a webhook
signing key, under that shared key with the algorithm the X-Twilio-Webhooks-Signature-Settings
header names (key=<id>,algorithm=HMAC_SHA256). Both are accepted once
`twilio.webhook_signing_key` is set. A request is checked only under the scheme it declares: a
declared shared-key signature that fails is refused, never tried again under the auth token
(or the reverse), so a downgrade buys an attacker nothing.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import (
    HMAC_SHA1,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from yarl import query_to_pairs

from commpro.appkeys import config_key, metrics_key, webhook_form_key
from commpro.auth import auth_for_path
from commpro.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType, ValidationError
from commpro.metrics import route_label

log = structlog.get_logger("commpro.webhooks")
FORM = "application/x-www-form-urlencoded"
INT32 = 2**31


@web.middleware
async def webhook_guard(request: web.Request, handler) -> web.StreamResponse:
    if auth_for_path(request.path) != "twilio-signature":
        return await handler(request)
    config = request.app[config_key]  # this middleware's app, the service's (as in commpro.logs)
    limit = config.server.webhook_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Webhook bodies are limited to {limit} bytes")
    body = await request.read()
    if len(body) > limit:
        raise PayloadTooLarge(f"Webhook bodies are limited to {limit} bytes")
    if body and request.content_type != FORM:
        raise UnsupportedMediaType(f"Webhooks must be {FORM}")
    try:
        text = body.decode("utf-8")
        form = _parse_form(text)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The webhook body is not a valid form") from None

    url = config.server.public_base_url + request.raw_path
    signature = request.headers.get(SIGNATURE_HEADER, "")
    scheme, secret = _declared_scheme(request, config.twilio)
    reason = None
    if not signature:
        reason = "missing"
    elif not secret:
        reason = "no_signing_key"
    elif not _signed(RequestValidator(secret), url, form, signature, scheme):
        reason = "mismatch"
    if reason is not None:
        log.warning(
            "webhook_signature_rejected",
            path=request.path,
            remote=request.remote,
            forwarded_for=request.headers.get("X-Forwarded-For"),
            reason=reason,
            scheme=scheme,
        )
        # Labelled by route template: a label per raw path would let anyone add series at will.
        request.app[metrics_key].signature_rejections.labels(route_label(request)).inc()
        raise Forbidden("Invalid Twilio signature")
    # Only "\x00" or "%00" decodes to NUL: the fields are searched only when the text has one.
    if ("\x00" in text or "%00" in text) and any("\x00" in key or "\x00" in value for key, value in form.items()):
        # Signed, yet unstorable: PostgreSQL's text cannot hold NUL.
        raise BadRequest("The webhook form must not contain NUL characters")
    request[webhook_form_key] = MultiDictProxy(form)
    return await handler(request)


def _parse_form(text: str) -> MultiDict[str]:
    """The form's fields as `parse_qsl(text, keep_blank_values=True, strict_parsing=True)` reads
    them (ValueError for an empty field or one without '='), through yarl's parser: the same
    pairs for a quarter of the CPU (its unquoting is compiled), on every webhook."""
    if text and any(not field or "=" not in field for field in text.split("&")):
        raise ValueError("a form field without '='")
    return MultiDict(query_to_pairs(text))


def _signed(validator: RequestValidator, url: str, form: MultiDict[str], signature: str, scheme: str) -> bool:
    """Whether Twilio signed this request. Twilio signs the URL it requested, which is `url`:
    that one signature first. `validate` computes two (the URL with and without its port, for
    Twilio's own inconsistencies): about a tenth of a status callback's CPU, so it only runs
    when the first does not match."""
    try:
        computed = validator.compute_signature(url, form, scheme)
        if hmac.compare_digest(computed.encode(), signature.encode("utf-8", "replace")):
            return True
    except ValueError:  # an algorithm the twilio package does not know: validate() says so
        pass
    return validator.validate(url, form, signature, algorithm=scheme)


def _declared_scheme(request: web.Request, twilio) -> tuple[str, str]:
    """(algorithm, secret) the request says it was signed with: the shared signing key under the
    algorithm of X-Twilio-Webhooks-Signature-Settings, else HMAC-SHA1 under the auth token. The
    secret is empty when the request declares a shared key and none is configured."""
    settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
    if settings is None:
        return HMAC_SHA1, twilio.auth_token
    return get_signature_algorithm(settings).upper(), twilio.webhook_signing_key


def webhook_form(request: web.Request, *required: str) -> MultiDictProxy[str]:
    """The verified form; 400 naming every required field that is missing or empty."""
    form = request[webhook_form_key]
    missing = {name: "required" for name in required if not form.get(name)}
    if missing:
        raise ValidationError("The webhook lacks required fields", details=missing)
    return form


def form_int(form: MultiDictProxy[str], name: str) -> int | None:
    """An optional whole-number field of a webhook; 400 naming it when it is something else."""
    value = form.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    # Bounded: the columns are integers, and a larger value would fail in the database (a 500).
    if number is None or not -INT32 <= number < INT32:
        raise ValidationError(details={name: "must be a whole number"})
    return number


def twiml(document: object) -> web.Response:
    """A TwiML document (a twilio.twiml builder) as Twilio expects it."""
    return web.Response(text=str(document), content_type="text/xml")
