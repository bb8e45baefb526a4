"""What an SMS costs, estimated before sending, and the opt-out keywords.

Twilio's NumSegments / num_segments is the billed count and the one stored; `estimate` only
previews it (POST /api/messages/preview), the way Twilio's segment calculator counts:

- the message is cut into graphemes (what a reader sees as one character); "\\r\\n" counts as two;
- GSM-7 when every grapheme is one character of GSM 03.38, else UCS-2 for the whole message;
- a segment holds 140 octets: 160 septets or 70 UTF-16 code units alone, and once the message
  takes several segments each loses 6 octets to the concatenation header: 153 septets, 67 units;
- a grapheme is never split between segments: an escape pair of the GSM extension table (€, [, ...)
  or a UTF-16 surrogate pair (😀) that would straddle a boundary moves whole to the next segment,
  which is why "a"*152 + "€" + "a"*152 takes 3 segments and not 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

# GSM 03.38: the basic set (one septet each) and the extension set (two: escape + char).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = frozenset("^{}\\[~]|€\f")
SEGMENT_BITS = 140 * 8
HEADER_BITS = 6 * 8
GRAPHEME = regex.compile(r"\X")

# Twilio's default opt-out handling (and its Advanced Opt-Out `OptOutType`).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


@dataclass(frozen=True)
class Estimate:
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    # As Twilio's calculator counts them: septets in GSM-7 (an extension character is two),
    # graphemes in UCS-2.
    characters: int


def graphemes(body: str) -> list[str]:
    # Twilio's calculator counts the two characters of a Windows line break separately.
    return [part for g in GRAPHEME.findall(body) for part in ((g[0], g[1]) if g == "\r\n" else (g,))]


def _gsm_septets(grapheme: str) -> int | None:
    if len(grapheme) != 1:
        return None
    return 1 if grapheme in GSM_BASIC else 2 if grapheme in GSM_EXTENDED else None


def estimate(body: str) -> Estimate:
    """The encoding, segment count and character count Twilio's segment calculator gives."""
    parts = graphemes(body)
    septets = [_gsm_septets(g) for g in parts]
    if all(s is not None for s in septets):
        sizes, encoding, characters = [7 * s for s in septets], "GSM-7", sum(septets)
    else:
        # UTF-16 code units: two for a character beyond the BMP, more for a composed grapheme.
        sizes = [8 * len(g.encode("utf-16-le")) for g in parts]
        encoding, characters = "UCS-2", len(parts)
    return Estimate(encoding, _segments(sizes), characters)


def _segments(sizes: list[int]) -> int:
    if sum(sizes) <= SEGMENT_BITS:
        return 1
    # Several segments: fill each header-carrying segment with whole graphemes.
    count, free = 1, SEGMENT_BITS - HEADER_BITS
    for size in sizes:
        if size > free:
            count, free = count + 1, SEGMENT_BITS - HEADER_BITS
        free -= size
    return count


def encoding_and_segments(body: str) -> tuple[str, int]:
    """(encoding, segments) of `estimate`: what the sender is told before Twilio has counted."""
    result = estimate(body)
    return result.encoding, result.segments


GSM_CHARACTERS = GSM_BASIC | GSM_EXTENDED


def encoding_of(body: str) -> str:
    """`estimate`'s encoding alone, without cutting graphemes (an inbound message needs no more;
    the profile showed `estimate` at 5 % of the webhook's CPU): every grapheme is one GSM
    character exactly when every character is one, since no GSM character combines with another
    into a grapheme but "\r\n", which `estimate` counts as two."""
    return "GSM-7" if GSM_CHARACTERS.issuperset(body) else "UCS-2"


def twilio_count(value: object) -> int | None:
    """Twilio's num_segments / NumSegments (a string in its JSON and forms); None when absent,
    not a number, or 0 (a Messaging Service has not counted yet)."""
    try:
        count = int(str(value))
    except ValueError:
        return None
    return count if count > 0 else None


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
