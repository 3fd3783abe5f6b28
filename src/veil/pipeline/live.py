"""Live: a camera or a network stream protected as it happens and sent on with its sound.

The same frame loop as a file (`veil.pipeline.frames`), with three differences:

- the source is read on its own thread as fast as it arrives (`LiveFeed`), never held up by
  detection, so a frame's arrival time is when it came; if it stalls or drops it is reopened with
  backoff (``--reconnect N``), its timestamps carried on where the stream stopped;
- the tracker holds few frames back (``--lookahead``, live default 1) and the encoder runs with
  x264's ``zerolatency`` tuning, so each frame leaves soon after it came; a frame that waited
  longer than ``--max-delay`` is sent fully masked or dropped (``--when-late``), so the delay never
  grows without bound and no frame is ever sent unprotected; the summary has the latency (p50,
  p95, max) and the late frames;
- the source's audio packets are forwarded as they come (re-encoded only where the sink cannot
  take them: AAC over RTMP, Opus into WebM).

Ctrl-C ends the stream cleanly: the frames held back are still protected and sent, and a file sink
is finalised and playable. `protect_stream` gives the protected frames to Python code instead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from veil.detect import Detector
from veil.errors import InputError, VeilError
from veil.media.audio import AudioPacket
from veil.media.damage import Damage
from veil.media.read import Frame, VideoInfo, VideoReader
from veil.media.sinks import is_live_target
from veil.media.sources import Source, source_name
from veil.media.write import VideoWriter
from veil.pipeline.files import export_header, live_exports
from veil.pipeline.frames import protect_frames
from veil.pipeline.options import LiveOptions, ProtectOptions, Summary
from veil.protect import Protector

__all__ = ["LiveFeed", "LIVE_LOOKAHEAD", "protect_live", "protect_stream"]

LIVE_LOOKAHEAD = 1
"""Frames the tracker holds back live (files: 3): one frame of delay buys gap filling between
detections on every other frame."""
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class LiveFeed:
    """A live source as a `FrameSource`: read on its own thread into a queue, so it is never blocked
    by protection; reopened with backoff when it stalls or drops (`reconnect` attempts), the new
    connection's frames scaled to the first one's size and its timestamps carried on."""

    def __init__(self, source: Source, *, reconnect: int = 0, follow: bool = False,
                 tolerate_damage: bool = True, max_pixels: int | None = None,
                 stop: threading.Event | None = None, stall_s: float = 10.0) -> None:
        self.source, self.reconnect, self.follow, self.stall_s = source, reconnect, follow, stall_s
        self.tolerate_damage, self.max_pixels = tolerate_damage, max_pixels
        self.reconnects = 0
        self.error: VeilError | None = None  # why the source ended, when it did not just end
        self._reader = self._open()
        self.info: VideoInfo = self._reader.info
        self.damage = Damage()
        self._stop = stop or threading.Event()
        # Reading starts now: a frame's arrival is when it came, whatever the loop does meanwhile.
        self._items: queue.Queue = queue.Queue()
        self._done = object()
        self._thread = threading.Thread(target=self._read, args=(self._items, self._done), daemon=True)
        self._thread.start()

    def _open(self) -> VideoReader:
        return VideoReader(self.source, audio=True, follow=self.follow, tolerate_damage=self.tolerate_damage,
                           max_pixels=self.max_pixels, stall_s=self.stall_s)

    def __iter__(self) -> Iterator[Frame]:
        return (item for item in self.demux() if isinstance(item, Frame))

    def demux(self) -> Iterator[Frame | AudioPacket]:
        """Frames and audio packets as they arrive; ends when the source ends (or gives up)."""
        try:
            while (item := self._items.get()) is not self._done:
                yield item
        finally:
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def _read(self, items: queue.Queue, done: object) -> None:
        reader: VideoReader | None = self._reader
        index, next_pts, next_audio = 0, None, None  # where a reconnected stream's clocks carry on
        try:
            while reader is not None and not self._stop.is_set():
                offset, first, audio_offset, first_audio = 0, True, 0, True
                try:
                    for item in reader.demux():
                        if self._stop.is_set():
                            return
                        if isinstance(item, AudioPacket):
                            if first_audio and next_audio is not None:
                                audio_offset = next_audio - item.dts
                            first_audio = False
                            if audio_offset:
                                item = replace(item, pts=item.pts + audio_offset, dts=item.dts + audio_offset)
                            next_audio = item.dts + max(item.duration, 1)
                            items.put(item)
                            continue
                        if first and next_pts is not None and item.pts is not None:
                            offset = next_pts - item.pts
                        first = False
                        frame = self._fit(item, index, offset)
                        index += 1
                        if frame.pts is not None:
                            next_pts = frame.pts + max(1, round(1 / (self.info.fps * self.info.time_base)))
                        items.put(frame)
                    self._close(reader)
                    reader = None  # the source ended
                except VeilError as exc:  # it stalled, dropped or broke: reconnect, or end here
                    self._close(reader)
                    reader = self._reopen(exc)
        finally:
            if reader is not None:
                self._close(reader)
            items.put(done)

    def _close(self, reader: VideoReader) -> None:
        reader.close()
        self.damage.errors += reader.damage.errors
        self.damage.frames += reader.damage.frames
        self.damage.ranges += reader.damage.ranges

    def _reopen(self, exc: VeilError) -> VideoReader | None:
        for wait in BACKOFF_S[:self.reconnect - self.reconnects] if self.reconnect > self.reconnects else ():
            if self._stop.wait(wait):
                return None
            try:
                reader = self._open()
            except VeilError:
                continue
            self.reconnects += 1
            return reader
        self.error = exc
        return None

    def _fit(self, frame: Frame, index: int, offset: int) -> Frame:
        """The frame as the stream's first connection had it: its size, its index, its clock."""
        image = frame.image
        if image.shape[:2] != (self.info.height, self.info.width):
            image = cv2.resize(image, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
        pts = None if frame.pts is None else frame.pts + offset
        return replace(frame, image=image, index=index, pts=pts, time_base=self.info.time_base)


def _live_options(options: ProtectOptions, sink: str | Path | None) -> ProtectOptions:
    """Live encoding: each frame leaves at once. x264 without its look-ahead and B-frames
    (``zerolatency``); libvpx (a WebM file sink) in real-time mode without frames held back."""
    encode = options.encode
    live_target = sink is None or is_live_target(sink)
    codec = (encode.codec or "libx264") if live_target else encode.codec_for(Path(sink))
    if codec in ("libx264", "libx265") and "tune" not in encode.extra:
        encode = replace(encode, extra={**encode.extra, "tune": "zerolatency"})
    elif codec in ("libvpx-vp9", "libvpx"):
        encode = replace(encode, extra={"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", **encode.extra})
    return replace(options, encode=encode)


def _with_reconnects(status: Callable[[Summary], None], feed: LiveFeed) -> Callable[[Summary], None]:
    def report(summary: Summary) -> None:
        summary.reconnects = feed.reconnects
        status(summary)
    return report


def protect_live(source: Source, sink: str | Path | None, options: ProtectOptions, live: LiveOptions = LiveOptions(),
                 *, follow: bool = False, detector: Detector | None = None, protector: Protector | None = None,
                 progress: Callable[[int, int], None] | None = None, status: Callable[[Summary], None] | None = None,
                 preview: Callable[[np.ndarray], None] | None = None, stop: threading.Event | None = None) -> Summary:
    """Protect a live source (a stream URL, a camera, ``-``, a growing file with `follow`) into
    `sink` (a file, a stream URL, an HLS playlist, ``-``; None: frames only go to `preview`).

    Raises `VeilError` when the source cannot be opened or the sink refuses; a source that stalls
    for good ends the stream with its frames so far written (the summary's ``stream_error`` says
    why). Setting `stop` ends it as Ctrl-C does. `status` is called about once a second with the
    summary so far (frames, late frames, reconnections, the latency of the last 10 s).
    """
    if options.review is not None:
        raise InputError("--review is for video files, not live sources")
    start = time.perf_counter()
    options = _live_options(options, sink)
    # The models load before the source opens: a live source does not wait for them.
    detector, protector = detector or options.build_detector(), protector or options.build_protector()
    feed = LiveFeed(source, reconnect=live.reconnect, follow=follow, tolerate_damage=options.on_damage != "stop",
                    max_pixels=options.max_pixels, stop=stop, stall_s=live.stall_s)
    info = feed.info
    detector.detect(np.zeros((info.height, info.width, 3), np.uint8))  # its first run at this size is slow
    summary = Summary(input=source_name(source), output=None if sink is None else str(sink), method=options.method,
                      detector=detector.name, width=info.width, height=info.height, fps=str(info.fps))
    writer = None
    exports = live_exports(source_name(source), options, protector)
    if sink is not None:
        writer = VideoWriter(sink, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
                             options=options.encode, colour=info.colour, audio=[info.audio] if info.audio else ())
    try:
        protect_frames(feed, detector, protector, writer, options, summary, progress, live=live, preview=preview,
                       status=None if status is None else _with_reconnects(status, feed), exports=exports)
    except BaseException:
        feed.stop()
        if writer is not None:
            writer.abort()
        if exports is not None:
            exports.abort()
        raise
    if writer is not None:
        writer.close()
    if exports is not None:  # written when the stream ends (or Ctrl-C ends it)
        exports.finish(video=export_header(Path(summary.input), info.width, info.height, str(info.fps)),
                       detector=detector.name, targets=list(options.targets))
        summary.audio_streams_copied = int(info.audio is not None and options.encode.keep_audio)
    summary.reconnects = feed.reconnects
    summary.seconds = time.perf_counter() - start
    summary.fps_processed = summary.frames / summary.seconds if summary.seconds else 0.0
    if feed.error is not None:
        summary.stream_error = str(feed.error)
    return summary


def protect_stream(source: Source, options: ProtectOptions = ProtectOptions(), live: LiveOptions = LiveOptions(), *,
                   follow: bool = False) -> Iterator[np.ndarray]:
    """The protected frames of a live source, as they come ((H, W, 3) uint8 RGB), for Python code
    that embeds veil: ``for frame in veil.protect_stream("rtsp://camera/stream"): ...``.

    Stopping the iteration (``break``) closes the source.
    """
    frames: queue.Queue = queue.Queue(maxsize=64)
    done, stop = object(), threading.Event()
    failure: list[BaseException] = []

    def give(image: np.ndarray) -> None:
        while not stop.is_set():
            try:
                frames.put(image, timeout=0.2)
                return
            except queue.Full:
                continue

    def run() -> None:
        lookahead = min(options.tracker.lookahead, LIVE_LOOKAHEAD)
        try:
            protect_live(source, None, replace(options, tracker=replace(options.tracker, lookahead=lookahead),
                                               detect_every=min(options.detect_every, lookahead + 1)),
                         live, follow=follow, preview=give, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)
        finally:
            stop.set()
            frames.put(done)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while (frame := frames.get()) is not done:
            yield frame
    finally:
        stop.set()
        while thread.is_alive():  # let the run end: it may be waiting to hand over a frame
            try:
                frames.get(timeout=0.1)
            except queue.Empty:
                pass
    if failure:
        raise failure[0]
