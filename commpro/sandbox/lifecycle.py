"""How the sandbox plays Twilio after a create call: signed callbacks, TwiML, recordings.

Every request it sends to the service is signed exactly as Twilio signs (twilio's
RequestValidator.compute_signature over the URL and the sorted form): with the account's auth
token, or, when twilio.webhook_signing_key is set, with that shared key under HMAC-SHA256 and
the X-Twilio-Webhooks-Signature-Settings header, so the service's webhook guard sees no
difference.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urljoin

import aiohttp
import structlog
from twilio.request_validator import HMAC_SHA256, SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, RequestValidator

from commpro.sandbox import magic
from commpro.sandbox.state import (
    API_VERSION,
    SandboxCall,
    SandboxRecording,
    SandboxState,
    new_sid,
    now,
)

log = structlog.get_logger("commpro.sandbox")
TERMINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# The verbs the sandbox understands; anything else makes the document invalid, as on Twilio.
VERBS = frozenset({"Say", "Play", "Pause", "Hangup", "Reject", "Dial", "Record", "Redirect", "Gather"})
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
SANDBOX_SIGNING_KEY_ID = "webhooks_sharedkey_sandbox"


class InvalidTwiML(Exception):
    pass


@dataclass
class PostResult:
    status: int
    text: str


async def post_signed(state: SandboxState, url: str, params: dict[str, Any]) -> PostResult:
    """POST a form to the service, signed like Twilio; never raises for HTTP or network errors."""
    form = {k: str(v) for k, v in params.items() if v is not None}
    headers = {"User-Agent": "TwilioProxy/1.1 (commpro sandbox)"}
    shared_key = state.config.webhook_signing_key
    if shared_key:
        headers[SIGNATURE_SETTINGS_HEADER] = f"key={SANDBOX_SIGNING_KEY_ID},algorithm={HMAC_SHA256}"
        headers[SIGNATURE_HEADER] = RequestValidator(shared_key).compute_signature(url, form, HMAC_SHA256)
    else:
        headers[SIGNATURE_HEADER] = RequestValidator(state.config.auth_token).compute_signature(url, form)
    try:
        async with state.session.post(url, data=form, headers=headers, timeout=HTTP_TIMEOUT) as resp:
            return PostResult(resp.status, await resp.text())
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("sandbox_callback_failed", url=url, error=type(exc).__name__)
        return PostResult(0, "")


def parse_twiml(text: str) -> ET.Element:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InvalidTwiML(f"not XML: {exc}") from None
    if root.tag != "Response":
        raise InvalidTwiML(f"root element is <{root.tag}>, not <Response>")
    for verb in root:
        if verb.tag not in VERBS:
            raise InvalidTwiML(f"unknown verb <{verb.tag}>")
    return root


def call_params(call: SandboxCall, **extra: Any) -> dict[str, Any]:
    return {
        "AccountSid": call.account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call.sid,
        "CallStatus": call.status,
        "Called": call.to,
        "Caller": call.from_,
        "Direction": call.direction,
        "From": call.from_,
        "To": call.to,
        "ParentCallSid": call.parent_sid,
        **extra,
    }


async def set_call_status(state: SandboxState, call: SandboxCall, status: str, event: str,
                          **extra: Any) -> None:
    # "initiated" is an event, not a state of the Call resource, which stays "queued" meanwhile.
    call.status = "queued" if status == "initiated" else status
    call.updated = now()
    extra["CallStatus"] = status
    if status == "in-progress":
        call.start = call.updated
    if status in TERMINAL:
        call.end = call.updated
        call.duration = call.duration or 0
        call.price_at = call.end + timedelta(seconds=state.config.pacing.price_after_s)
        extra.setdefault("CallDuration", call.duration)
        if call.error_code:
            extra.setdefault("ErrorCode", call.error_code)
    notify = call.status_callback and event in call.status_events
    if notify:
        # SequenceNumber counts the status callbacks of this call, from 0, as on Twilio.
        extra.update(SequenceNumber=call.sequence, CallbackSource="call-progress-events",
                     Timestamp=now().strftime("%a, %d %b %Y %H:%M:%S +0000"))
        call.sequence += 1
    # Written before the callback: the service may ask the REST API about the call at once.
    await state.save_call(call)
    if notify:
        await post_signed(state, call.status_callback, call_params(call, **extra))


def callee_keys(number: str) -> str | None:
    """What the party at `number` presses when a <Gather> asks: a person presses 1, a carrier
    voicemail (magic.MACHINE) nothing, magic.DECLINES 9."""
    return {magic.MACHINE: None, magic.DECLINES: "9"}.get(number, "1")


def callee_answers(number: str) -> str:
    """How the party at `number` responds: 'answer', 'busy' or 'no-answer'."""
    if number == magic.BUSY:
        return "busy"
    if number == magic.NO_ANSWER:
        return "no-answer"
    return "answer"


async def drive_call(state: SandboxState, call: SandboxCall) -> None:
    """An outbound-api call: initiated, ringing, answered, its TwiML played, completed."""
    s = state.config.pacing
    await set_call_status(state, call, "initiated", "initiated")
    await asyncio.sleep(s.ring_after_s)
    await set_call_status(state, call, "ringing", "ringing")
    await asyncio.sleep(s.answer_after_s)
    outcome = callee_answers(call.to)
    if outcome != "answer":
        await set_call_status(state, call, outcome, "completed")
        return
    call.status = "in-progress"
    await state.save_call(call)
    document = call.twiml
    if document is None:
        result = await post_signed(state, call.url or "", call_params(call))
        if result.status != 200:
            call.error_code = 11200  # HTTP retrieval failure
            await set_call_status(state, call, "failed", "completed")
            return
        document = result.text
    try:
        root = parse_twiml(document)
    except InvalidTwiML as exc:
        log.info("sandbox_invalid_twiml", call_sid=call.sid, reason=str(exc))
        call.error_code = 12100  # Document parse failure
        await set_call_status(state, call, "failed", "completed")
        return
    await set_call_status(state, call, "in-progress", "answered")
    await play(state, call, root, base_url=call.url or "")
    call.duration = s.call_duration_s
    await set_call_status(state, call, "completed", "completed")


async def finish_inbound_call(state: SandboxState, call: SandboxCall, answer: PostResult,
                              voice_url: str, status_url: str) -> None:
    """After the voice webhook answered: play its TwiML, then end the call and report it."""
    if answer.status != 200:
        call.error_code = 11200  # HTTP retrieval failure
    else:
        try:
            root = parse_twiml(answer.text)
        except InvalidTwiML as exc:
            log.info("sandbox_invalid_twiml", call_sid=call.sid, reason=str(exc))
            call.error_code = 12100  # Document parse failure
        else:
            if root.find("Reject") is None:
                call.status, call.start = "in-progress", now()
                await state.save_call(call)
                await play(state, call, root, base_url=voice_url)
                call.duration = state.config.pacing.call_duration_s
    status = "failed" if call.error_code else ("completed" if call.start else "busy")
    call.status_callback, call.status_events = status_url, frozenset({"completed"})
    await set_call_status(state, call, status, "completed")


async def play(state: SandboxState, call: SandboxCall, root: ET.Element, base_url: str, depth: int = 0) -> bool:
    """Act out the verbs that reach the service again, <Dial>, <Record> and <Gather>, and then the
    TwiML their action answers with, as Twilio does (a few levels deep at most). False when the
    document hung up, True when it ran to its end (a whisper that ends so connects its leg)."""
    for verb in root:
        if verb.tag in ("Hangup", "Reject"):
            return False
        if verb.tag == "Play":
            await fetch_play(state, urljoin(base_url, (verb.text or "").strip()))
        if verb.tag in ("Record", "Dial", "Gather"):
            act = {"Record": record, "Dial": dial, "Gather": gather}[verb.tag]
            action, answer = await act(state, call, verb, base_url)
            if verb.tag == "Gather" and action is None:
                continue  # nothing pressed: Twilio goes on with the next verb
            if action and answer.status == 200 and depth < 5:
                try:
                    following = parse_twiml(answer.text)
                except InvalidTwiML as exc:
                    log.info("sandbox_invalid_twiml", call_sid=call.sid, reason=str(exc))
                    call.error_code = 12100
                    return False
                return await play(state, call, following, action, depth + 1)
            return True
    return True


NO_ACTION = PostResult(0, "")


async def fetch_play(state: SandboxState, url: str) -> None:
    """<Play>: Twilio GETs the audio (no credentials, no signature of its own); the sandbox notes
    what it got in state.played, (url, HTTP status, Content-Type), so tests can check it."""
    try:
        async with state.session.get(url, timeout=HTTP_TIMEOUT) as resp:
            await resp.read()
            state.played.append((url, resp.status, resp.content_type))
    except (aiohttp.ClientError, TimeoutError):
        state.played.append((url, 0, ""))


async def gather(state: SandboxState, call: SandboxCall, verb: ET.Element,
                 base_url: str) -> tuple[str | None, PostResult]:
    """The called party presses a key (callee_keys), posted to the action with Digits; nothing
    pressed: no request at all (actionOnEmptyResult is false by default)."""
    digits = callee_keys(call.to)
    if not digits:
        return None, NO_ACTION
    action = urljoin(base_url, verb.get("action") or base_url)
    return action, await post_signed(state, action, call_params(call, Digits=digits))


async def whisper(state: SandboxState, leg: SandboxCall, url: str) -> bool:
    """<Number url>: the document played to the answered leg before it is connected; True when
    it ran to its end (connect), False when it hung up (the leg drops)."""
    result = await post_signed(state, url, call_params(leg))
    if result.status != 200:
        return False
    try:
        root = parse_twiml(result.text)
    except InvalidTwiML as exc:
        log.info("sandbox_invalid_twiml", call_sid=leg.sid, reason=str(exc))
        return False
    return await play(state, leg, root, url)


async def record(state: SandboxState, call: SandboxCall, verb: ET.Element,
                 base_url: str) -> tuple[str | None, PostResult]:
    duration = min(int(verb.get("maxLength", "3600")), state.config.pacing.call_duration_s)
    await talk(state, duration)
    rec = SandboxRecording(new_sid("RE"), call.sid, call.account_sid, duration)
    await state.add_recording(rec)
    api = state.config.api_base_url
    recording_url = f"{api}/{API_VERSION}/Accounts/{call.account_sid}/Recordings/{rec.sid}"
    if verb.get("transcribe") == "true" and verb.get("transcribeCallback"):
        state.spawn(transcribe(state, call, rec, recording_url, urljoin(base_url, verb.get("transcribeCallback"))))
    action = urljoin(base_url, verb.get("action", "")) if verb.get("action") else None
    if action is None:
        return None, NO_ACTION
    return action, await post_signed(state, action, call_params(
        call,
        RecordingSid=rec.sid,
        RecordingUrl=recording_url,
        RecordingDuration=duration,
        Digits="hangup",
    ))


async def transcribe(state: SandboxState, call: SandboxCall, rec: SandboxRecording, recording_url: str,
                     callback: str) -> None:
    """Twilio's transcription arrives a while after the recording: a fixed sentence naming the
    caller, or a failure for magic.NO_TRANSCRIPT."""
    await asyncio.sleep(state.config.pacing.transcription_after_s * state.config.pacing.pace)
    failed = call.from_ == magic.NO_TRANSCRIPT
    sid = new_sid("TR")
    await post_signed(state, callback, call_params(
        call,
        TranscriptionSid=sid,
        TranscriptionStatus="failed" if failed else "completed",
        TranscriptionText=None if failed else f"Bonjour, ici le {call.from_}. Rappelez-moi s'il vous plaît.",
        TranscriptionType="fast",
        TranscriptionUrl=f"{state.config.api_base_url}/{API_VERSION}/Accounts/{call.account_sid}/Transcriptions/{sid}",
        RecordingSid=rec.sid,
        RecordingUrl=recording_url,
    ))


async def dial_recording(state: SandboxState, call: SandboxCall, verb: ET.Element, base_url: str,
                         duration: int) -> None:
    """<Dial record>: the connected call's recording (two channels when "-dual"), then its
    recordingStatusCallback once it is ready."""
    dual = verb.get("record", "").endswith("-dual")
    rec = SandboxRecording(new_sid("RE"), call.sid, call.account_sid, duration, channels=2 if dual else 1,
                           source="DialVerb")
    await state.add_recording(rec)
    callback = verb.get("recordingStatusCallback")
    events = (verb.get("recordingStatusCallbackEvent") or "completed").split()
    if callback and "completed" in events:
        await post_signed(state, urljoin(base_url, callback), {
            "AccountSid": call.account_sid, "CallSid": call.sid, "RecordingSid": rec.sid,
            "RecordingUrl": f"{state.config.api_base_url}/{API_VERSION}/Accounts/{call.account_sid}"
                            f"/Recordings/{rec.sid}",
            "RecordingStatus": "completed", "RecordingDuration": duration, "RecordingChannels": rec.channels,
            "RecordingSource": "DialVerb", "RecordingStartTime": rec.json()["start_time"],
        })


async def talk(state: SandboxState, seconds: float) -> None:
    """A connected call lasting `seconds` (talking, recording): sandbox.pace real seconds per
    second, so that the answered and ended times agree with the duration Twilio reports."""
    pause = seconds * state.config.pacing.pace
    if pause > 0:
        await asyncio.sleep(pause)


async def dial(state: SandboxState, call: SandboxCall, verb: ET.Element,
               base_url: str) -> tuple[str | None, PostResult]:
    """One child leg per <Number> or <Client>, all ringing at once; the first to answer (and,
    when screened, accept) is connected and the others are canceled, as on Twilio."""
    s = state.config.pacing
    targets = [(n.tag, (n.text or "").strip(), n) for n in verb if n.tag in ("Number", "Client")]
    if not targets and (verb.text or "").strip():
        targets = [("Number", verb.text.strip(), verb)]
    dial_status, winner, dropped, ringing = "no-answer", None, None, []
    for tag, target, noun in targets:
        to = target if tag == "Number" else f"client:{target}"
        leg = SandboxCall(new_sid("CA"), call.account_sid, verb.get("callerId") or call.from_, to,
                          "outbound-dial", parent_sid=call.sid,
                          status_callback=urljoin(base_url, noun.get("statusCallback", "")) or None,
                          status_events=frozenset((noun.get("statusCallbackEvent") or "completed").split()))
        outcome, error = magic.DIAL_OUTCOMES.get(to, (callee_answers(to), None))
        await set_call_status(state, leg, "initiated", "initiated")
        if outcome == "failed":
            leg.error_code = error
            await set_call_status(state, leg, "failed", "completed")
            dial_status = "failed"
            continue
        # Paced like the first leg, so that a person watching sees the far end ring, then answer.
        await asyncio.sleep(state.config.pacing.ring_after_s)
        await set_call_status(state, leg, "ringing", "ringing")
        ringing.append((leg, noun, outcome))
    if ringing:
        await asyncio.sleep(s.answer_after_s)  # the phones ring
    for leg, noun, outcome in ringing:
        if outcome != "answer":
            continue
        await set_call_status(state, leg, "in-progress", "answered")
        screen = noun.get("url")
        if screen and not await whisper(state, leg, urljoin(base_url, screen)):
            # Answered, then hung up at the whisper: Twilio still reports the Dial completed.
            leg.duration = 1
            await set_call_status(state, leg, "completed", "completed")
            dial_status, dropped = "completed", dropped or leg
            continue
        winner = leg
        break
    for leg, _noun, outcome in ringing:
        if leg is winner or leg.status in TERMINAL:
            continue
        final = "canceled" if outcome == "answer" else outcome
        await set_call_status(state, leg, final, "completed")
        if dial_status not in ("completed", "failed") and final != "canceled":
            dial_status = final
    if winner is not None:
        if verb.get("answerOnBridge") == "true":
            call.start = now()  # the caller's leg is answered only now
            await state.save_call(call)
        await talk(state, s.call_duration_s)
        winner.duration = s.call_duration_s
        await set_call_status(state, winner, "completed", "completed")
        dial_status = "completed"
        if verb.get("record", "do-not-record").startswith("record-from-"):
            await dial_recording(state, call, verb, base_url, s.call_duration_s)
    action = urljoin(base_url, verb.get("action")) if verb.get("action") else None
    if action is None:
        return None, NO_ACTION
    answered = winner or dropped
    return action, await post_signed(state, action, call_params(
        call,
        DialCallStatus=dial_status,
        DialCallSid=answered.sid if answered else None,
        DialCallDuration=winner.duration if winner else 0,
    ))
