"""The settings, as frozen dataclasses: one per section of config.toml.

config.py loads them (config.toml, then the environment) and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """An invalid or missing setting; the message names every key at fault."""


@dataclass(frozen=True)
class AppSettings:
    env: str = "development"
    data_dir: str = ".commpro"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    public_base_url: str = ""
    max_body_bytes: int = 6 * 1024 * 1024
    webhook_max_body_bytes: int = 64 * 1024
    shutdown_timeout_s: float = 15.0


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(default="", repr=False)
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 10.0


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key: str = field(default="", repr=False)
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str = ""
    jwt_issuer: str = ""
    leeway_s: int = 30
    dev_token_ttl_s: int = 7 * 24 * 3600


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = field(default="", repr=False)
    api_base_url: str = ""
    insights_base_url: str = ""
    timeout_s: float = 10.0
    # The shared key Twilio signs webhooks with (HMAC-SHA256) when the account has one; empty:
    # only auth-token signatures (HMAC-SHA1) are accepted.
    webhook_signing_key: str = field(default="", repr=False)
    # For the mobile apps' Access Tokens (GET /api/calls/token).
    api_key_sid: str = ""
    api_key_secret: str = field(default="", repr=False)
    twiml_app_sid: str = ""
    push_credential_sid: str = ""
    # Set by the loader: True when no credentials were given in development, so the local
    # sandbox stands in for Twilio. Not a key of config.toml.
    sandbox: bool = False
    # Set by the loader: where the account SID and auth token came from, for the banner.
    credentials_from: str = ""


@dataclass(frozen=True)
class CallSettings:
    rate_per_minute: int = 10
    # A call Twilio never confirmed (no answer to the create, no webhook since) is failed after this.
    unconfirmed_after_s: float = 900.0


@dataclass(frozen=True)
class MessageSettings:
    rate_per_minute: int = 60
    max_upload_bytes: int = 5 * 1024 * 1024
    max_fetch_bytes: int = 5 * 1024 * 1024
    media_url_ttl_s: int = 3600
    fetch_interval_s: float = 10.0
    fetch_retry_first_s: float = 5.0
    fetch_attempts: int = 8
    unconfirmed_after_s: float = 3600.0
    # Delete Twilio's copy of each message's media and redact its body there, once the message
    # is stored (inbound) or final (outbound). The loader turns it on by default in production.
    erase_at_twilio: bool = False
    erase_interval_s: float = 30.0
    erase_retry_first_s: float = 30.0
    erase_attempts: int = 10


@dataclass(frozen=True)
class IdempotencySettings:
    # How long a request in flight holds its key: longer than the Twilio deadline, so that only a
    # request that died (a killed process) ever lets a retry take its key over.
    lease_s: float = 60.0
    retention_s: float = 86400.0
    # How often unconfirmed rows are swept and old keys purged.
    sweep_interval_s: float = 60.0


@dataclass(frozen=True)
class PriceSettings:
    poll_interval_s: float = 30.0
    first_after_s: float = 30.0
    retry_max_s: float = 900.0
    window_s: float = 86400.0


@dataclass(frozen=True)
class VoiceSettings:
    greeting_voice: str = "Polly.Lea"
    greeting_language: str = "fr-FR"
    voicemail_greeting: str = "Bonjour, votre correspondant n'est pas disponible. Laissez un message après le bip."
    unknown_number_message: str = "Ce numéro n'est pas attribué. Au revoir."
    ring_timeout_s: int = 20
    voicemail_max_length_s: int = 60
    # Call screening on the legs to a phone: {caller} / {callee} are read out digit by digit.
    screening_prompt: str = "Appel CommPro de {caller}. Appuyez sur 1 pour accepter."
    outbound_screening_prompt: str = "Appel CommPro vers {callee}. Appuyez sur 1 pour appeler."
    screening_timeout_s: int = 6
    # Twilio's transcription of voicemails (<Record transcribe>; English, billed per minute).
    transcribe_voicemail: bool = True
    # Said to both parties before a recorded call (numbers with recordCalls), unless the number words its own.
    recording_announcement: str = "Cet appel est enregistré."
    after_hours_greeting: str = "Bonjour, nous sommes fermés. Laissez un message après le bip."
    # Recorded greetings (PUT /api/numbers/{id}/greetings/{kind}): size limit, life of Twilio's link.
    greeting_max_bytes: int = 2 * 1024 * 1024
    greeting_url_ttl_s: int = 3600


@dataclass(frozen=True)
class CryptoSettings:
    master_key: str = field(default="", repr=False)
    # Older master keys, still readable until `commpro keys rotate-master` has re-wrapped.
    previous_master_keys: tuple[str, ...] = field(default=(), repr=False)
    key_cache_ttl_s: float = 300.0
    key_cache_size: int = 10000


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    # "console" (coloured when on a terminal) or "json"; empty: console in development, json in
    # production.
    format: str = ""


@dataclass(frozen=True)
class SandboxSettings:
    ring_after_s: float = 1.0
    answer_after_s: float = 2.0
    call_duration_s: int = 5
    # Real seconds per second of a connected call (talk, recording): 1 plays calls at Twilio's
    # pace, so each state can be watched; tests set 0.
    pace: float = 1.0
    # A voicemail's transcript arrives this long (times pace) after the recording.
    transcription_after_s: float = 3.0
    message_step_s: float = 0.5
    summary_partial_after_s: float = 10.0
    summary_complete_after_s: float = 60.0
    price_after_s: float = 5.0
    demo_user: str = "demo"


@dataclass(frozen=True)
class QualitySettings:
    first_fetch_after_s: float = 120
    poll_interval_s: float = 60
    complete_after_s: float = 1800
    give_up_after_s: float = 7200
    concurrency: int = 4
    # Alert thresholds: Twilio's own defaults for its quality tags.
    mos_min: float = 3.5
    jitter_max_ms: float = 30.0
    packet_loss_max_pct: float = 3.0
    rtt_max_ms: float = 400.0
    latency_max_ms: float = 150.0


@dataclass(frozen=True)
class AlertSettings:
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_attempts: int = 8
    webhook_retry_first_s: float = 5.0
    webhook_timeout_s: float = 5.0
    delivery_interval_s: float = 10.0


@dataclass(frozen=True)
class EventSettings:
    heartbeat_s: float = 25.0
    queue_size: int = 256
    retention_s: float = 7 * 86400
    retention_interval_s: float = 3600
    # A stream's lease on its user's notifications (sql/0016); renewed every third of it.
    listen_lease_s: float = 60.0


@dataclass(frozen=True)
class JobSettings:
    # A claim's lease; renewed every third of it while the job runs.
    lease_s: float = 60.0
    # Each retry delay is shortened at random by up to this fraction, so retries spread out.
    jitter: float = 0.2
    # Finished and given-up jobs are kept this long (for /status and inspection), then purged.
    retention_s: float = 7 * 86400
    retention_interval_s: float = 3600
    # Rate-limit buckets untouched this long are purged (a bucket refills in a minute).
    rate_limit_idle_s: float = 3600


@dataclass(frozen=True)
class MetricsSettings:
    # When set, GET /metrics needs "Authorization: Bearer <token>".
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class Config:
    app: AppSettings = AppSettings()
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    twilio: TwilioSettings = TwilioSettings()
    calls: CallSettings = CallSettings()
    messages: MessageSettings = MessageSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    prices: PriceSettings = PriceSettings()
    voice: VoiceSettings = VoiceSettings()
    crypto: CryptoSettings = CryptoSettings()
    log: LogSettings = LogSettings()
    sandbox: SandboxSettings = SandboxSettings()
    quality: QualitySettings = QualitySettings()
    alerts: AlertSettings = AlertSettings()
    events: EventSettings = EventSettings()
    jobs: JobSettings = JobSettings()
    metrics: MetricsSettings = MetricsSettings()
    # Warnings to log once logging is up (generated dev secrets, ...).
    notices: tuple[str, ...] = ()

    @property
    def production(self) -> bool:
        return self.app.env == "production"

    @property
    def data_dir(self) -> Path:
        return Path(self.app.data_dir)

    @property
    def local_base_url(self) -> str:
        """How this process reaches itself (the sandbox is mounted on the same server)."""
        host = self.server.host if self.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.server.port}"
