"""What the sandbox needs to know, and nothing of the service's own settings.

The service reaches the sandbox only through `twilio.api_base_url`; the sandbox reaches the
service only through its public URL, with webhooks signed by the auth token, as Twilio does. It
shares the service's database, in a schema of its own (sandbox/store.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Pacing(Protocol):
    """How fast the sandbox plays calls and messages (config.toml's [sandbox] section)."""

    ring_after_s: float
    answer_after_s: float
    call_duration_s: int
    message_step_s: float
    summary_partial_after_s: float
    summary_complete_after_s: float
    price_after_s: float
    pace: float
    transcription_after_s: float


@dataclass(frozen=True)
class SandboxConfig:
    # The account it plays, and the token it checks requests and signs webhooks with.
    account_sid: str
    auth_token: str
    # The service's public base URL: where the webhooks of inbound calls and messages go.
    public_base_url: str
    # Its own REST base, as clients reach it (resource URIs and media URLs point there).
    api_base_url: str
    pacing: Pacing
    # The PostgreSQL it keeps its records in (schema `sandbox`, its own): the service's database.
    database_url: str
    # When set, webhooks are signed with HMAC-SHA256 under this shared key instead.
    webhook_signing_key: str = ""
