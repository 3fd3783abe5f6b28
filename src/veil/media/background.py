"""Work on background threads for the frame loop: decode ahead (`prefetch`), and protect and
encode behind (`Sink`), so that detection on the calling thread overlaps both (PyAV, OpenCV and
x264 release the GIL)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetch", "Sink", "queue_depth"]

T = TypeVar("T")


def queue_depth(width: int, height: int, budget_bytes: int = 64 << 20, most: int = 12, least: int = 4) -> int:
    """How many frames of a size a queue of the frame loop holds: `most` (deep queues let decoding
    and encoding go on through a slow detection), fewer where that many frames would take more
    than `budget_bytes` of RGB (10 at 1080p, 4 at 4K), never fewer than `least`."""
    return max(least, min(most, budget_bytes // max(1, 3 * width * height)))


def prefetch(items: Iterable[T], depth: int = 8) -> Iterator[T]:
    """Iterate on a background thread, `depth` items ahead (errors re-raised in the caller)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class Sink:
    """Runs `consume(*item)` for each item on one background thread, in order, a few items ahead.

    Protection and encoding (OpenCV, x264: both release the GIL) then overlap the next frames'
    detection. An error in `consume` is raised again by the next `put` or by `close`.
    """

    def __init__(self, consume: Callable[..., None], depth: int = 4) -> None:
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(*item)
                except BaseException as exc:  # noqa: BLE001 - handed to the producer
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, *item: object) -> None:
        self._check()
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._check()

    def abandon(self) -> None:
        """Stop after the queued items, ignoring their result (the run failed elsewhere)."""
        self._error = self._error or RuntimeError("abandoned")
        self._queue.put(None)
        self._thread.join()
