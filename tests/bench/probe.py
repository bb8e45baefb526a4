"""A measurement taken every so often in a thread while a load runs: the disk's fdatasync
(disk.py), the CPU stolen by the hypervisor (steal.py)."""

from __future__ import annotations

import threading
from typing import Any, Self


class Probe:
    """`with probe:` calls `_sample()` every `interval_s` in a thread of its own until the block
    ends, and keeps what it returns in `samples` (None: nothing more to sample). `_open()` and
    `_close()` run in that thread, before the first sample and after the last."""

    name = "probe"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._sampled = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, samples: int, timeout: float) -> bool:
        """Whether `samples` samples were taken within `timeout` seconds."""
        with self._sampled:
            return self._sampled.wait_for(lambda: len(self.samples) >= samples, timeout)

    def _open(self) -> None:
        pass

    def _sample(self) -> Any:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _run(self) -> None:
        self._open()
        try:
            while not self._stop.is_set():
                sample = self._sample()
                if sample is None:
                    return
                with self._sampled:
                    self.samples.append(sample)
                    self._sampled.notify_all()
                self._stop.wait(self.interval_s)
        finally:
            self._close()
