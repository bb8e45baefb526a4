"""The CPU stolen while each S3 request was in flight, measured in the same run.

This machine is a virtual one: the hypervisor takes its CPUs away for milliseconds at a time
(/proc/stat's steal), and a request in flight then waits whatever the code does. In one run of
three S3 rounds (voice at 200/s, 2,000 requests each), the requests during which no CPU was
stolen had a p50 of 3.7 to 3.8 ms and a p99 of 10.9 to 18.7 ms; those during which 30 % or more
was stolen, a p50 of 14 to 19 ms and a p99 of 74 to 95 ms; the rounds' p99s were 52 to 68 ms.
So the report splits S3's requests by that: a thread reads the steal every 20 ms, the load
generator writes when each request left and how long its answer took (load.js --trace), and a
request saw steal when a tick was stolen between the last reading before it left and the first
after its answer. The kernel counts in ticks of 10 ms: "none" means none within a reading or so
either side, the coarse side of the truth.
"""

from __future__ import annotations

import bisect
import time

from tests.bench import rounds
from tests.bench.probe import Probe

Reading = tuple[float, int, int]  # (epoch ms, stolen ticks, all ticks)


class StealProbe(Probe):
    """`with StealProbe() as probe:` reads the machine's CPU ticks every `interval_s` until the
    block ends; `readings` after. Nothing is read where there is no /proc/stat."""

    name = "steal-probe"

    def __init__(self, interval_s: float = 0.02) -> None:
        super().__init__(interval_s)

    @property
    def readings(self) -> list[Reading]:
        return self.samples

    def _sample(self) -> Reading | None:
        ticks = rounds.cpu_ticks()
        return None if ticks is None else (time.time() * 1000, *ticks)


def split(trace: list[tuple[float, float]], readings: list[Reading]) -> dict:
    """The requests of `trace` ((epoch ms sent, latency ms) each) in two groups, those during
    which no CPU tick was stolen and the others, each with its count, p50 and p99. Requests
    outside the readings are left out."""
    times = [reading[0] for reading in readings]
    groups: dict[str, list[float]] = {"none": [], "some": []}
    for sent, latency in trace:
        before = bisect.bisect_right(times, sent) - 1
        after = bisect.bisect_left(times, sent + latency)
        if before < 0 or after >= len(readings):
            continue
        stolen = readings[after][1] - readings[before][1]
        groups["some" if stolen else "none"].append(latency)
    out = {}
    for name, latencies in groups.items():
        latencies.sort()
        out[name] = {"requests": len(latencies), "p50_ms": rounds.percentile(latencies, 0.5),
                     "p99_ms": rounds.percentile(latencies, 0.99)}
    return out
