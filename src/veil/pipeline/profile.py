"""Where a video's time goes: wall time per stage of the frame loop, in ms per frame.

The stages run on three threads at once (decoding ahead, detection and tracking here, protection
and encoding behind), so their times add up to more than the run's wall time; the share of each
in their sum says which one to make cheaper. Each stage is timed only on its own thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["STAGES", "StageClock"]

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

    def add(self, stage: str, seconds: float) -> None:
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
            self.seconds[stage] += time.perf_counter() - start
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
        self.clock.seconds[self.name] += time.perf_counter() - self.start
