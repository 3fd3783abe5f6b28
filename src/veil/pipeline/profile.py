"""Where a video's time goes: wall time per stage of the frame loop, in ms per frame; and a live
run's delays (`Latency`).

The stages run on four threads at once (decoding ahead, detection and tracking here, protection
and encoding behind, each on its own), so their times add up to more than the run's wall time;
the share of each in their sum says which one to make cheaper. Each stage is timed only on its
own thread, as wall time: on a machine with fewer cores than busy threads it includes the waits
for a core, so a stage's share is larger than its own work where the others crowd it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

__all__ = ["STAGES", "StageClock", "Latency"]

T = TypeVar("T")
STAGES = ("decode", "detect", "track", "protect", "encode")


class StageClock:
    """Seconds spent in each of `STAGES`.

    >>> clock = StageClock()
    >>> with clock.stage("detect"):  # doctest: +SKIP
    ...     faces = detector.detect(image)
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()  # a stage may be timed on two threads (tracking's motion on the decoder's)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def stage(self, name: str) -> _Timing:
        return _Timing(self, name)

    def timed(self, items: Iterable[T], stage: str = "decode") -> Iterator[T]:
        """`items`, the time each takes to come counted to `stage` (on the thread that iterates)."""
        it = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.add(stage, time.perf_counter() - start)
            yield item

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        """Each stage's ms per frame (empty for no frames)."""
        if frames <= 0:
            return {}
        return {k: round(1000.0 * v / frames, 2) for k, v in self.seconds.items()}


class _Timing:
    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name, self.start = clock, name, 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.clock.add(self.name, time.perf_counter() - self.start)


class Latency:
    """Delays from a frame's arrival (when it was due, by the stream's clock; see `_FrameLoop._due`)
    to its encoded packet, in ms: the last 100,000 of them (a day-long stream keeps its memory)
    and the largest."""

    def __init__(self, keep: int = 100_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.largest = 0.0

    def add(self, seconds: float) -> None:
        ms = 1000.0 * seconds
        self.samples.append(ms)
        self.largest = max(self.largest, ms)

    def summary(self, last: int | None = None) -> dict[str, float]:
        """p50, p95 and max; of the `last` samples only (what the delay is now), or of all."""
        if not self.samples:
            return {}
        samples = list(self.samples)[-last:] if last else self.samples
        p50, p95 = np.percentile(np.asarray(samples), [50, 95])
        largest = max(samples) if last else self.largest
        return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "max": round(largest, 1)}
