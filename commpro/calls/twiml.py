"""The TwiML documents CommPro answers with, built with twilio's own builders.

Every URL in them is absolute, under PUBLIC_BASE_URL, and carries the callId: Twilio signs the
URL it calls, so the webhook guard checks exactly these URLs.
"""

from __future__ import annotations

from urllib.parse import urlencode

import asyncpg
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from commpro.numbers.greetings import signed_greeting_url
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


def voicemail(config: Config, number: asyncpg.Record, call_id: object, greeting: str | None = None,
              kind: str = "voicemail") -> VoiceResponse:
    """The greeting, then a recording that lands on /webhook/voice/recording as a voicemail.
    The greeting: the one the user recorded for `kind` (played from its signed URL), else the
    text `greeting`, else the number's, else the default, said."""
    response = VoiceResponse()
    recorded = (number["greetings"] or {}).get(kind)
    if recorded:
        response.play(signed_greeting_url(config, recorded))
    else:
        _say(response, greeting or number["greeting_text"] or config.voice.voicemail_greeting, number, config)
    transcribe = config.voice.transcribe_voicemail
    response.record(
        max_length=config.voice.voicemail_max_length_s,
        action=webhook_url(config, "/webhook/voice/recording", callId=call_id, voicemail=1,
                           transcribe=1 if transcribe else None),
        method="POST",
        play_beep=True,
        transcribe=transcribe or None,
        transcribe_callback=webhook_url(config, "/webhook/voice/transcription", callId=call_id) if transcribe else None,
    )
    response.hangup()
    return response


def _recording(config: Config, number: asyncpg.Record | None, call_id: object) -> dict[str, str]:
    """<Dial> attributes that record both legs, each on its own channel, from the answer on; the
    recording status callback reconciles it. Nothing for a number that does not record."""
    if number is None or not number["record_calls"]:
        return {}
    return {"record": "record-from-answer-dual",
            "recording_status_callback": webhook_url(config, "/webhook/voice/recording/status", callId=call_id),
            "recording_status_callback_event": "completed absent", "recording_status_callback_method": "POST"}


def announcement(config: Config, number: asyncpg.Record) -> str:
    return number["recording_announcement"] or config.voice.recording_announcement


def announce(config: Config, number: asyncpg.Record) -> VoiceResponse:
    """Whispered to a recorded call's destination when it answers, before it is connected."""
    response = VoiceResponse()
    _say(response, announcement(config, number), number, config)
    return response


def forward(config: Config, number: asyncpg.Record, call_id: object, identity: str | None) -> VoiceResponse:
    """Ring the user's app (`identity`) and/or phone; the Dial action decides about voicemail.

    The phone leg is screened (its `url` whispers and waits for a key) when the number says so:
    a carrier voicemail answering it is not the user. answerOnBridge: the caller hears ringback,
    not silence, until a leg is connected."""
    response = VoiceResponse()
    if number["greeting_text"]:
        _say(response, number["greeting_text"], number, config)
    if number["record_calls"]:  # the caller's consent: told before anything is recorded
        _say(response, announcement(config, number), number, config)
    screened = bool(number["forward_to"] and number["screening"])
    dial = Dial(
        timeout=number["ring_timeout_s"],
        action=webhook_url(config, "/webhook/voice/completed", callId=call_id, screened=1 if screened else None),
        method="POST",
        answer_on_bridge=True,
        **_recording(config, number, call_id),
    )
    if identity:
        dial.client(identity, status_callback_event=ALL_EVENTS, status_callback_method="POST",
                    status_callback=webhook_url(config, "/webhook/voice/status", callId=call_id, leg="dial",
                                                device="app"))
    if number["forward_to"]:
        screen = {"url": webhook_url(config, "/webhook/voice/screen", callId=call_id), "method": "POST"} \
            if screened else {}
        dial.number(number["forward_to"], status_callback_event=ALL_EVENTS, status_callback_method="POST",
                    status_callback=webhook_url(config, "/webhook/voice/status", callId=call_id, leg="dial",
                                                device="phone", screened=1 if screened else None),
                    **screen)
    response.append(dial)
    return response


def _spoken(number: str) -> str:
    """A phone number read out digit by digit, not as one large number."""
    return " ".join(c for c in number if c.isdigit())


def _screen(config: Config, prompt: str, action: str) -> VoiceResponse:
    """Say `prompt` and wait for one key; nothing pressed (a voicemail, a machine) hangs up."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, timeout=config.voice.screening_timeout_s, action=action, method="POST",
                    action_on_empty_result=False)
    gather.say(prompt, voice=config.voice.greeting_voice, language=config.voice.greeting_language)
    response.append(gather)
    response.hangup()
    return response


def screen_leg(config: Config, call_id: object, caller: str) -> VoiceResponse:
    """The whisper the user's phone hears on an inbound call before it is connected."""
    return _screen(config, config.voice.screening_prompt.format(caller=_spoken(caller)),
                   webhook_url(config, "/webhook/voice/screen/result", callId=call_id))


def screen_first_leg(config: Config, call_id: object, callee: str) -> VoiceResponse:
    """POST /api/calls/initiate: the user's phone must accept before the destination is dialled."""
    return _screen(config, config.voice.outbound_screening_prompt.format(callee=_spoken(callee)),
                   webhook_url(config, "/webhook/voice/outbound/accept", callId=call_id))


def connect() -> VoiceResponse:
    """The end of a whisper that accepted: an empty document, and Twilio bridges the leg."""
    return VoiceResponse()


def bridge(config: Config, call_id: object, caller_id: str, to: str, *, answer_on_bridge: bool = False,
           number: asyncpg.Record | None = None) -> VoiceResponse:
    """Dial the destination, showing the business number. answer_on_bridge for a call the app
    placed: it hears the destination's ringback instead of a call that seems already answered.
    A recorded number's call: the user hears the announcement first, the destination on answering."""
    response = VoiceResponse()
    recording = _recording(config, number, call_id)
    if recording:
        _say(response, announcement(config, number), number, config)
    dial = Dial(caller_id=caller_id, answer_on_bridge=answer_on_bridge or None, **recording)
    whisper = {"url": webhook_url(config, "/webhook/voice/announce", callId=call_id), "method": "POST"} \
        if recording else {}
    dial.number(to, status_callback=webhook_url(config, "/webhook/voice/status", callId=call_id, leg="dial"),
                status_callback_event=ALL_EVENTS, status_callback_method="POST", **whisper)
    response.append(dial)
    return response


def refuse(config: Config, message: str) -> VoiceResponse:
    """Said to an app user whose call cannot be placed, then the call ends."""
    response = VoiceResponse()
    _say(response, message, None, config)
    response.hangup()
    return response
