"""Reaching the sandbox's controls (/_sandbox/simulate/*, /_sandbox/control) over HTTP, with
its Basic credentials: for `commpro sandbox ...` and the console's development routes.

Over HTTP rather than by calling into the sandbox, so that neither needs the sandbox's code or
state: only the URL the server listens on and the sandbox's credentials, from the same settings.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from commpro.settings import Config

TIMEOUT_S = 30


class SandboxUnreachable(Exception):
    """No server answered at the sandbox's URL."""


async def sandbox_post(config: Config, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
    """POST `payload` to `/_sandbox{path}`; return the status and the JSON body (or the text
    when it is not JSON)."""
    url = f"{config.local_base_url}/_sandbox{path}"
    auth = aiohttp.encode_basic_auth(config.twilio.account_sid, config.twilio.auth_token)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=payload, headers={"Authorization": auth},
                                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
                if resp.content_type == "application/json":
                    return resp.status, await resp.json()
                return resp.status, resp.reason if resp.status >= 400 else await resp.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise SandboxUnreachable(f"cannot reach the sandbox at {url} ({type(exc).__name__})") from None
