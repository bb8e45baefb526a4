"""Fuzzing the live service with schemathesis, from /openapi.json (issue 11).

Shared by tests/test_fuzz.py (a small seeded run in `make test`) and tests/harden.py (the full
run in `make harden`). The service runs in a thread of its own with its own event loop, so that
schemathesis' synchronous client can talk to it from this one; two users (A owns data, B owns
none) give the tokens.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self

import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seeded
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection, response_schema_conformance

from commpro.app import create_app
from commpro.appkeys import pool_key
from commpro.auth import mint_token
from commpro.devserver import mount_sandbox
from commpro.numbers.store import insert_number
from commpro.openapi import document
from commpro.settings import Config

WAV = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(24) + b"data" + bytes(4)
CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection, ignored_auth]
CHECK_NAMES = ["not_a_server_error", "response_schema_conformance", "negative_data_rejection", "ignored_auth",
               "object_level_authorization"]
# Mobile calling configured, so that /api/calls/token answers rather than 503 "not configured".
FUZZ_ENV = {"TWILIO_API_KEY_SID": "SK" + "0" * 32, "TWILIO_API_KEY_SECRET": "fuzz-" + "s" * 40,
            "TWILIO_TWIML_APP_SID": "AP" + "0" * 32, "TWILIO_PUSH_CREDENTIAL_SID": "CR" + "0" * 32}
PEER = "+447911123456"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class ThreadedService:
    """The real app on 127.0.0.1, served from a thread with its own loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-service", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.server.port}"

    def run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def __enter__(self) -> Self:
        self._thread.start()

        async def start() -> None:
            self.app = create_app(self.config)
            if self.config.twilio.sandbox:
                mount_sandbox(self.app, self.config)
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.config.server.port).start()

        self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def token(self, user: str) -> str:
        return mint_token(self.config, user)


@dataclass
class Owned:
    """What user A owns, by path template, to fill the path parameters of each operation."""

    user: str
    ids: dict[str, str] = field(default_factory=dict)


def seed_user(service: ThreadedService, user: str, number: str) -> Owned:
    """Give `user` a number (ringing an app identity), a call, a conversation and a message."""

    async def add() -> str:
        async with service.app[pool_key].acquire() as conn:
            row = await insert_number(conn, user, number, identity="fuzz-" + uuid.uuid4().hex[:8], forward_to=PEER)
        return str(row["id"])

    number_id = service.run(add())
    auth = {"Authorization": f"Bearer {service.token(user)}"}
    call = requests.post(service.url + "/api/calls/initiate", json={"from": number, "to": PEER}, headers=auth,
                         timeout=30).json()
    sent = requests.post(service.url + "/api/messages/send", json={"from": number, "to": PEER, "body": "hello"},
                         headers=auth, timeout=30).json()
    mms = requests.post(service.url + "/api/messages/send-mms", data={"from": number, "to": PEER},
                        files={"media": ("a.png", PNG, "image/png")}, headers=auth, timeout=30).json()
    conversations = requests.get(service.url + "/api/messages/conversations", headers=auth, timeout=30).json()
    contact = conversations["conversations"][0]["contactId"]
    messages = requests.get(f"{service.url}/api/messages/conversations/{contact}", headers=auth, timeout=30).json()
    [media] = [m["media"][0]["id"] for m in messages["messages"] if m["id"] == mms["messageId"]]
    return Owned(user, {"number": number_id, "call": call["callId"], "message": sent["messageId"],
                        "contact": contact, "mms": mms["messageId"], "media": media})


def path_values(template: str, owned: Owned) -> dict[str, str] | None:
    """A's ids for the path parameters of `template`, or None when A has no such object."""
    if template == "/api/numbers/{id}/greetings/{kind}":
        return {"id": owned.ids["number"], "kind": "voicemail"}
    if template.startswith("/api/numbers/"):
        return {"id": owned.ids["number"]}
    if template.startswith("/api/calls/{id}"):
        return {"id": owned.ids["call"]}
    if template.startswith("/api/messages/conversations/{contactId}"):
        return {"contactId": owned.ids["contact"]}
    if template.startswith("/api/contacts/{id}"):
        return {"id": owned.ids["contact"]}
    if template == "/api/messages/{id}/read":
        return {"id": owned.ids["message"]}
    if template == "/api/messages/{id}/media/{mediaId}":
        return {"id": owned.ids["mms"], "mediaId": owned.ids["media"]}
    return None


def object_level_authorization(service: ThreadedService, owned: Owned, intruder: str) -> tuple[int, list[str]]:
    """Every operation on one of A's objects, with B's token: 404, never A's data. Returns the
    number of requests made and the failures."""
    failures: list[str] = []
    cases = 0
    as_b = {"Authorization": f"Bearer {service.token(intruder)}"}
    as_a = {"Authorization": f"Bearer {service.token(owned.user)}"}
    bodies = {"patch": {"routing": "reject"}}
    for template, item in document()["paths"].items():
        values = path_values(template, owned)
        if "{" not in template or not template.startswith("/api/"):
            continue  # no object, or not a user's object (/media/{id} is signed for Twilio)
        if values is None:
            failures.append(f"{template}: no object of user A to try it with (add it to tests/fuzz.py path_values)")
            continue
        url = service.url + template.format(**values)
        for method in item:
            # A valid body, so that only ownership can refuse it.
            body = {"blocked": True} if template.startswith("/api/contacts/") and method == "patch" else bodies.get(method)
            # A greeting is uploaded as multipart: a real WAV header, so only ownership refuses it.
            upload = {"file": ("g.wav", WAV, "audio/wav")} if template.endswith("/greetings/{kind}") else None
            cases += 1
            intruded = requests.request(method, url, json=None if upload and method == "put" else body,
                                        files=upload if method == "put" else None, headers=as_b, timeout=30)
            if intruded.status_code != 404:
                failures.append(f"{method.upper()} {template} with B's token: {intruded.status_code}, not 404")
            if method == "get":
                # A can read it (a recording A's call lacks is 404 for A too: nothing to compare).
                own = requests.request(method, url, headers=as_a, timeout=30)
                if own.status_code not in (200, 404) or (own.status_code == 404 and "recording" not in template):
                    failures.append(f"{method.upper()} {template} with A's token: {own.status_code}")
    return cases, failures


@dataclass
class FuzzResult:
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    by_status: dict[int, int] = field(default_factory=dict)


def fuzz(service: ThreadedService, token: str, *, examples: int, seed: int,
         progress: Callable[[str], None] | None = None) -> FuzzResult:
    """Positive and negative cases for every operation of the document, `examples` of each per
    operation, checked with CHECKS. Failures are collected, not raised, so one bad operation does
    not hide the others."""
    result = FuzzResult()
    schema = schemathesis.openapi.from_dict(document())
    session = requests.Session()
    for operation in (r.ok() for r in schema.get_all_operations()):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz_operation(service.url, session, token, operation, mode, examples, seed, result)
            except Unsatisfiable:
                pass  # nothing to make negative (no parameters, no body): the positive run covers it
        if progress is not None:
            progress(f"{operation.label}: {result.cases} cases so far, {len(result.failures)} failures")
    return result


def _fuzz_operation(base_url: str, session: requests.Session, token: str, operation, mode: GenerationMode,
                    examples: int, seed: int, result: FuzzResult) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    transport = {"base_url": base_url, "session": session}
    seen: set[str] = set()

    @seeded(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        result.cases += 1
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        result.by_status[response.status_code] = result.by_status.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=transport)
        except (Exception, FailureGroup) as exc:  # noqa: BLE001 - collected, not raised
            title = f"{operation.label} [{mode.value}]: {str(exc).strip().splitlines()[0]}"
            if title not in seen:
                seen.add(title)
                result.failures.append(f"{title}\n{exc}")

    run()
