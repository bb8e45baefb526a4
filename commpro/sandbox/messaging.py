"""How the sandbox plays an outbound message after its create: its media fetched, then sent and
delivered (or failed), each step written through to the database before its signed callback."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp

from commpro.sandbox.lifecycle import HTTP_TIMEOUT, post_signed
from commpro.sandbox.state import API_VERSION, SandboxMessage, SandboxState, now


async def drive_message(state: SandboxState, message: SandboxMessage) -> None:
    """An outbound message: its media fetched, then sent and delivered (or failed)."""
    step = state.config.pacing.message_step_s
    for url in message.media_urls:
        try:
            async with state.session.get(url, timeout=HTTP_TIMEOUT) as resp:
                ok = resp.status == 200 and resp.content_type.startswith(("image/", "video/", "audio/"))
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if not ok:
            message.error_code, message.error_message = 12300, "Invalid Content-Type or unreachable media URL"
            await set_message_status(state, message, "failed")
            return
    await asyncio.sleep(step)
    message.sent = now()
    await set_message_status(state, message, "sent")
    await asyncio.sleep(step)
    await set_message_status(state, message, "delivered")


async def set_message_status(state: SandboxState, message: SandboxMessage, status: str) -> None:
    message.status = status
    message.updated = now()
    if status in ("delivered", "undelivered", "failed"):
        message.price_at = message.updated + timedelta(seconds=state.config.pacing.price_after_s)
    await state.save_message(message)
    if message.status_callback:
        await post_signed(state, message.status_callback, {
            "AccountSid": message.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "From": message.from_,
            "To": message.to,
            "ErrorCode": message.error_code,
            "ErrorMessage": message.error_message,
        })
