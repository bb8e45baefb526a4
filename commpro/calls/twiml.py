"""The TwiML documents CommPro answers with, built with twilio's own builders.

Every URL in them is absolute, under PUBLIC_BASE_URL, and carries the callId: Twilio signs the
URL it calls, so the webhook guard checks exactly these URLs.
"""

from __future__ import annotations

from urllib.parse import urlencode

import asyncpg
from twilio.twiml.voice_response import Dial, VoiceResponse

from commpro.settings import Config

# Every event of a leg, so that its status is known as soon as Twilio knows it.
ALL_EVENTS = "initiated ringing answered completed"


def webhook_url(config: Config, path: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{config.server.public_base_url}{path}" + (f"?{query}" if query else "")


def _say(response: VoiceResponse, text: str, number: asyncpg.Record | None, config: Config) -> None:
    voice = (number["greeting_voice"] if number else None) or config.voice.greeting_voice
    language = (number["greeting_language"] if number else None) or config.voice.greeting_language
    response.say(text, voice=voice, language=language)


def hangup() -> VoiceResponse:
    response = VoiceResponse()
    response.hangup()
    return response


def unknown_number(config: Config) -> VoiceResponse:
    response = VoiceResponse()
    _say(response, config.voice.unknown_number_message, None, config)
    response.hangup()
    return response


def reject() -> VoiceResponse:
    response = VoiceResponse()
    response.reject()
    return response


def voicemail(config: Config, number: asyncpg.Record, call_id: object) -> VoiceResponse:
    """The greeting, then a recording that lands on /webhook/voice/recording as a voicemail."""
    response = VoiceResponse()
    _say(response, number["greeting_text"] or config.voice.voicemail_greeting, number, config)
    response.record(
        max_length=config.voice.voicemail_max_length_s,
        action=webhook_url(config, "/webhook/voice/recording", callId=call_id, voicemail=1),
        method="POST",
        play_beep=True,
    )
    response.hangup()
    return response


def forward(config: Config, number: asyncpg.Record, call_id: object, identity: str | None) -> VoiceResponse:
    """Ring the user's app (`identity`) and/or phone; the Dial action decides about voicemail."""
    response = VoiceResponse()
    if number["greeting_text"]:
        _say(response, number["greeting_text"], number, config)
    dial = Dial(
        timeout=number["ring_timeout_s"],
        action=webhook_url(config, "/webhook/voice/completed", callId=call_id),
        method="POST",
    )
    leg_status = webhook_url(config, "/webhook/voice/status", callId=call_id, leg="dial")
    if identity:
        dial.client(identity, status_callback=leg_status, status_callback_event=ALL_EVENTS,
                    status_callback_method="POST")
    if number["forward_to"]:
        dial.number(number["forward_to"], status_callback=leg_status, status_callback_event=ALL_EVENTS,
                    status_callback_method="POST")
    response.append(dial)
    return response


def bridge(config: Config, call_id: object, caller_id: str, to: str) -> VoiceResponse:
    """The user answered: now dial the destination, showing the business number."""
    response = VoiceResponse()
    dial = Dial(caller_id=caller_id)
    dial.number(to, status_callback=webhook_url(config, "/webhook/voice/status", callId=call_id, leg="dial"),
                status_callback_event=ALL_EVENTS, status_callback_method="POST")
    response.append(dial)
    return response


def refuse(config: Config, message: str) -> VoiceResponse:
    """Said to an app user whose call cannot be placed, then the call ends."""
    response = VoiceResponse()
    _say(response, message, None, config)
    response.hangup()
    return response
