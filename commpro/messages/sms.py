"""What an SMS costs: its encoding and number of segments, and the opt-out keywords."""

from __future__ import annotations

# GSM 03.38: the basic set (one septet each) and the extension set (two: escape + char).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")

# Twilio's default opt-out handling (and its Advanced Opt-Out `OptOutType`).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def encoding_and_segments(body: str) -> tuple[str, int]:
    """('GSM-7', n) when every character is in GSM 03.38, else ('UCS-2', n).

    GSM-7: 160 septets in one segment, 153 each when split; UCS-2: 70 UTF-16 code units, 67.
    """
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in body):
        units = sum(2 if c in GSM_EXTENDED else 1 for c in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return encoding, 1
    return encoding, -(-units // multi)


def opt_keyword(body: str, opt_out_type: str | None) -> str | None:
    """'stop', 'start' or 'help' when the message is one of those keywords, else None."""
    kind = (opt_out_type or "").upper() or body.strip().upper()
    if kind in STOP_WORDS:
        return "stop"
    if kind in START_WORDS:
        return "start"
    if kind in HELP_WORDS:
        return "help"
    return None
