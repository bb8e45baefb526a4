"""Reading a Voice Insights call Summary: the figures of the edge that measured the call.

App (SDK) calls have an `sdk_edge` (and a `client_edge`) with MOS and RTT; PSTN calls a
`carrier_edge`, SIP calls a `sip_edge`, with jitter, loss, latency and the codec. Both media
directions are read and the worse one kept: a call is as bad as its worse side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from commpro.quality.emodel import estimate_mos

# The edge whose figures describe the call best, first.
EDGES = ("sdk_edge", "client_edge", "sip_edge", "carrier_edge")
APP_EDGES = frozenset({"sdk_edge", "client_edge"})


@dataclass
class Figures:
    edge: str | None = None
    jitter_ms: float | None = None
    jitter_max_ms: float | None = None
    latency_ms: float | None = None
    packet_loss_pct: float | None = None
    rtt_ms: float | None = None
    mos: float | None = None
    mos_estimated: bool = False
    codec: str | None = None
    tags: list[str] = field(default_factory=list)


def _number(value: Any, *keys: str) -> float | None:
    """A figure given as a number, or as an object of statistics ({avg, max, ...})."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), int | float):
                return float(value[key])
    return None


def _worst(values: list[float | None], low_is_bad: bool = False) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if low_is_bad else max(present)


def read_summary(summary: dict[str, Any]) -> Figures:
    tags = [t for t in summary.get("tags") or [] if isinstance(t, str)]
    for edge in EDGES:
        data = summary.get(edge)
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            continue
        streams = [s for s in (data["metrics"].get("inbound"), data["metrics"].get("outbound")) if isinstance(s, dict)]
        if not streams:
            continue
        figures = Figures(
            edge=edge,
            jitter_ms=_worst([_number(s.get("jitter"), "avg", "average") for s in streams]),
            jitter_max_ms=_worst([_number(s.get("jitter"), "max") for s in streams]),
            latency_ms=_worst([_number(s.get("latency"), "avg", "average") for s in streams]),
            packet_loss_pct=_worst([_number(s.get("packets_loss_percentage")) for s in streams]),
            rtt_ms=_worst([_number(s.get("rtt"), "avg", "average") for s in streams]),
            mos=_worst([_number(s.get("mos"), "average", "avg") for s in streams], low_is_bad=True),
            codec=next((s["codec_name"] for s in streams if isinstance(s.get("codec_name"), str)), None),
            tags=tags,
        )
        if figures.mos is None and edge not in APP_EDGES:
            # Twilio measures MOS for app calls only; elsewhere, estimate it.
            figures.mos = estimate_mos(figures.latency_ms, figures.jitter_ms, figures.packet_loss_pct, figures.codec)
            figures.mos_estimated = figures.mos is not None
        return figures
    return Figures(tags=tags)
