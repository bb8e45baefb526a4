"""Secrets at start-up: production refuses to start without them, development makes them once.

Split from config.py, which loads and checks the settings; this decides what a missing secret
means.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from pathlib import Path

from commpro.settings import Config, ConfigError


def fill_secrets(config: Config, origin: dict) -> Config:
    """Production refuses to start without its secrets; development generates them once."""
    auth, twilio, crypto, server = config.auth, config.twilio, config.crypto, config.server
    uses_hmac = any(a.startswith("HS") for a in auth.jwt_algorithms)
    uses_keys = any(not a.startswith("HS") for a in auth.jwt_algorithms)
    has_twilio = bool(twilio.account_sid or twilio.auth_token)
    if has_twilio:
        sources = dict.fromkeys(origin.get(("twilio", key), f"twilio.{key}") for key in ("account_sid", "auth_token"))
        twilio = dataclasses.replace(twilio, credentials_from=" and ".join(sources))
    if config.production:
        missing = []
        if uses_hmac and not auth.jwt_secret:
            missing.append("JWT_SECRET")
        if uses_keys and not auth.jwt_public_key:
            missing.append("JWT_PUBLIC_KEY")
        if not crypto.master_key:
            missing.append("COMMPRO_MASTER_KEY")
        if not twilio.account_sid:
            missing.append("TWILIO_ACCOUNT_SID")
        if not twilio.auth_token:
            missing.append("TWILIO_AUTH_TOKEN")
        if not server.public_base_url:
            missing.append("PUBLIC_BASE_URL")
        if missing:
            raise ConfigError("production needs these settings: " + ", ".join(missing))
        return dataclasses.replace(config, twilio=twilio)

    if uses_keys and not auth.jwt_public_key:
        raise ConfigError(f"{origin.get(('auth', 'jwt_algorithms'), 'auth.jwt_algorithms')}: "
                          "an RS/ES algorithm needs JWT_PUBLIC_KEY")
    if twilio.account_sid and not twilio.auth_token or twilio.auth_token and not twilio.account_sid:
        raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN go together")
    notices = list(config.notices)
    dev = dev_secrets(config.data_dir, notices)
    if uses_hmac and not auth.jwt_secret:
        auth = dataclasses.replace(auth, jwt_secret=dev["jwt_secret"])
    if not crypto.master_key:
        crypto = dataclasses.replace(crypto, master_key=dev["master_key"])
    if not has_twilio:
        # No Twilio account: the sandbox, mounted on this server, plays Twilio.
        local = config.local_base_url
        twilio = dataclasses.replace(
            twilio,
            account_sid=dev["twilio_account_sid"],
            auth_token=dev["twilio_auth_token"],
            api_base_url=twilio.api_base_url or f"{local}/_sandbox/api",
            insights_base_url=twilio.insights_base_url or f"{local}/_sandbox/insights",
            sandbox=True,
            credentials_from=f"generated in {config.data_dir / 'dev-secrets.json'}",
        )
    if not server.public_base_url:
        server = dataclasses.replace(server, public_base_url=config.local_base_url)
    return dataclasses.replace(
        config, auth=auth, twilio=twilio, crypto=crypto, server=server, notices=tuple(notices)
    )


def dev_secrets(data_dir: Path, notices: list[str]) -> dict[str, str]:
    path = data_dir / "dev-secrets.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); delete it to generate new dev secrets") from None
    values = {
        "jwt_secret": secrets.token_urlsafe(48),
        "master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "twilio_account_sid": "AC" + secrets.token_hex(16),
        "twilio_auth_token": secrets.token_hex(16),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written aside then linked into place: when two processes start at once, one wins and the
    # other reads the complete file, never a half-written one.
    tmp = path.with_name(f".dev-secrets.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(values, f)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return json.loads(path.read_text())
    finally:
        tmp.unlink()
    notices.append(
        f"development secrets generated in {path}: never use them in production "
        "(set COMMPRO_ENV=production and real secrets there)"
    )
    return values
