"""Which alerts a call's figures raise: the configured thresholds (Twilio's own defaults), and
every quality tag Twilio put on the call."""

from __future__ import annotations

from dataclasses import dataclass

from commpro.quality.summary import APP_EDGES, Figures
from commpro.settings import QualitySettings

# Twilio's tags that say something about quality (not, say, the call's direction).
QUALITY_TAGS = frozenset({
    "high_jitter", "high_packet_loss", "high_latency", "high_pdd", "low_mos", "silence", "ice_failure",
    "dtls_failure", "low_audio_level", "high_rtt", "jitter", "packet_loss", "audio_not_flowing",
})


@dataclass(frozen=True)
class Alert:
    kind: str
    source: str  # "threshold" or "twilio"
    value: float | None = None
    threshold: float | None = None


def evaluate(figures: Figures, settings: QualitySettings) -> list[Alert]:
    alerts: dict[str, Alert] = {}

    def over(kind: str, value: float | None, limit: float, below: bool = False) -> None:
        if value is not None and (value < limit if below else value > limit):
            alerts[kind] = Alert(kind, "threshold", round(value, 3), limit)

    over("low_mos", figures.mos, settings.mos_min, below=True)
    over("high_jitter", figures.jitter_ms, settings.jitter_max_ms)
    over("high_packet_loss", figures.packet_loss_pct, settings.packet_loss_max_pct)
    if figures.edge in APP_EDGES:
        over("high_rtt", figures.rtt_ms, settings.rtt_max_ms)
    else:
        over("high_latency", figures.latency_ms, settings.latency_max_ms)
    for tag in figures.tags:
        if tag in QUALITY_TAGS and tag not in alerts:
            alerts[tag] = Alert(tag, "twilio")
    return sorted(alerts.values(), key=lambda a: a.kind)
