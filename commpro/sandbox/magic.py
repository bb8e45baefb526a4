"""The numbers that make the sandbox misbehave on purpose.

The first ones are Twilio's own test-credential magic numbers, with Twilio's real error codes
(https://www.twilio.com/docs/iam/test-credentials). The +1500555001x and +1500555002x ones are
the sandbox's own, for what test credentials cannot show: a callee who is busy or never
answers, and a call of poor quality.
"""

from __future__ import annotations

# To of POST /Calls -> (HTTP status, Twilio code, message)
CALL_TO_ERRORS: dict[str, tuple[int, int, str]] = {
    "+15005550001": (400, 21217, "Phone number is not a valid phone number."),
    "+15005550002": (400, 21214, "Twilio cannot route to this number."),
    "+15005550003": (400, 21215, "Account not authorized to call this number (no geographic permission)."),
    "+15005550004": (400, 21216, "This number is blocked for your account."),
}
CALL_FROM_ERRORS: dict[str, tuple[int, int, str]] = {
    "+15005550001": (400, 21212, "The 'From' phone number is not valid."),
}

# To of POST /Messages
MESSAGE_TO_ERRORS: dict[str, tuple[int, int, str]] = {
    "+15005550001": (400, 21211, "The 'To' number is not a valid phone number."),
    "+15005550002": (400, 21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (400, 21408, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient."),
    "+15005550009": (400, 21614, "The 'To' number is not a mobile number and cannot receive SMS."),
}
MESSAGE_FROM_ERRORS: dict[str, tuple[int, int, str]] = {
    "+15005550001": (400, 21212, "The 'From' phone number is not valid."),
    "+15005550007": (400, 21606, "The 'From' phone number is not a valid, SMS-capable number for your account."),
    "+15005550008": (400, 21611, "This 'From' number has exceeded the maximum number of queued messages."),
}

# Sent while the account is suspended (POST /_sandbox/control {"account": "suspended"}).
ACCOUNT_SUSPENDED = (401, 20005, "Account not active: the account is suspended or out of funds.")

# The sandbox's own: how a called party (first leg, or a <Dial><Number>) answers.
BUSY = "+15005550011"
NO_ANSWER = "+15005550012"
# A called party (first leg, or a <Dial><Number>) that answers like a carrier voicemail: it
# presses no key when screened. DECLINES answers and presses 9. Anyone else presses 1.
MACHINE = "+15005550013"
DECLINES = "+15005550014"
# A voicemail left from this number gets a failed transcription.
NO_TRANSCRIPT = "+15005550022"
# Calls to or from this number get a poor Voice Insights summary (high jitter and loss);
# an app identity whose name starts with "poor" gets a low MOS.
POOR_QUALITY = "+15005550020"
# Calls to or from this number never get a Voice Insights summary.
NO_SUMMARY = "+15005550021"

# <Dial><Number> to a magic destination ends that leg like this: (DialCallStatus, ErrorCode)
DIAL_OUTCOMES: dict[str, tuple[str, int | None]] = {
    "+15005550001": ("failed", 13224),
    "+15005550002": ("failed", 13227),
    "+15005550003": ("failed", 13227),
    "+15005550004": ("failed", 13225),
    BUSY: ("busy", None),
    NO_ANSWER: ("no-answer", None),
}
