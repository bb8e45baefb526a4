"""Development only: the service with the Twilio sandbox beside it, on the same port.

`commpro serve` mounts it when no Twilio credentials are set (config.twilio.sandbox), and the
tests build their service the same way. Production imports neither this module nor the sandbox:
the service knows its Twilio only through `twilio.api_base_url`, which points here in development.
"""

from __future__ import annotations

from aiohttp import web

from commpro.appkeys import own_auth_key
from commpro.sandbox import create_sandbox_app
from commpro.sandbox.config import SandboxConfig
from commpro.sandbox.state import SandboxState, sandbox_state_key
from commpro.settings import Config

# config_secrets points twilio.api_base_url and insights_base_url under this prefix.
SANDBOX_PREFIX = "/_sandbox"


def sandbox_config(config: Config) -> SandboxConfig:
    """The little the sandbox needs to know of the service's settings."""
    return SandboxConfig(
        account_sid=config.twilio.account_sid,
        auth_token=config.twilio.auth_token,
        public_base_url=config.server.public_base_url,
        api_base_url=config.twilio.api_base_url,
        pacing=config.sandbox,
        database_url=config.database.url,
        webhook_signing_key=config.twilio.webhook_signing_key,
    )


def mount_sandbox(app: web.Application, config: Config) -> SandboxState:
    """Mount the sandbox on the service's `app` (before it starts), and return its memory."""
    sandbox = create_sandbox_app(sandbox_config(config))
    # It checks Twilio's Basic credentials itself: the service's JWT middleware leaves it be.
    sandbox[own_auth_key] = True
    app.add_subapp(SANDBOX_PREFIX, sandbox)
    # Also reachable from the service's app, for the tests that wait on its lifecycles.
    app[sandbox_state_key] = sandbox[sandbox_state_key]
    return sandbox[sandbox_state_key]
