"""A MOS estimate for calls Twilio gives no MOS for (PSTN and SIP legs): the ITU-T G.107 E-model.

    R = R0 - Is - Id - Ie,eff + A,  with G.107's default values: R0 - Is = 93.2, A = 0  (G.107 §7)
    Id      = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)
              the delay impairment, as fitted to G.107's Idd by Cole & Rosenbluth, "Voice over IP
              performance monitoring", ACM SIGCOMM CCR 31(2), 2001; d is the one-way delay in ms
              and H the unit step. A jitter buffer turns jitter into delay: d = latency + 2 jitter
              + 10 ms of codec look-ahead (the usual practice in VoIP monitoring).
    Ie,eff  = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)                         (G.107 eq. 7-29)
              with random loss (BurstR = 1) and the codec's Ie and Bpl from ITU-T G.113
              Appendix I (G.711 with packet-loss concealment: Ie = 0, Bpl = 25.1).
    MOS     = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6 for 0 < R < 100,
              1 for R <= 0, 4.5 for R >= 100                                  (G.107 Annex B)

It is an estimate from three averages, so the API flags it (`mosEstimated`).
"""

from __future__ import annotations

R_DEFAULT = 93.2
# codec -> (Ie, Bpl). Opus is not in G.113: its concealment is at least G.711's, so G.711's
# figures make a conservative estimate.
CODECS = {"pcmu": (0.0, 25.1), "pcma": (0.0, 25.1), "opus": (0.0, 25.1)}


def delay_impairment(one_way_ms: float) -> float:
    d = max(one_way_ms, 0.0)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def loss_impairment(loss_pct: float, codec: str | None = None) -> float:
    ie, bpl = CODECS.get((codec or "pcmu").lower(), CODECS["pcmu"])
    ppl = min(max(loss_pct, 0.0), 100.0)
    return ie + (95 - ie) * ppl / (ppl + bpl)


def r_factor(latency_ms: float, jitter_ms: float, loss_pct: float, codec: str | None = None) -> float:
    effective_delay = latency_ms + 2 * jitter_ms + 10
    return R_DEFAULT - delay_impairment(effective_delay) - loss_impairment(loss_pct, codec)


def mos_from_r(r: float) -> float:
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def estimate_mos(latency_ms: float | None, jitter_ms: float | None, loss_pct: float | None,
                 codec: str | None = None) -> float | None:
    """None when Twilio gave none of the three figures."""
    if latency_ms is None and jitter_ms is None and loss_pct is None:
        return None
    r = r_factor(latency_ms or 0.0, jitter_ms or 0.0, loss_pct or 0.0, codec)
    return round(mos_from_r(r), 2)
