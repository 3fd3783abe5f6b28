"""Video in with PyAV: streaming decode, upright frames with their timestamps, and the audio.

A video is read from a file, a file still being written, a pipe or a file object
(:mod:`veil.media.sources`). Reading never holds more than a few frames in memory. Frames come out upright (a display-matrix
rotation is applied to the pixels, so the protected video displays exactly as the original did)
as (H, W, 3) uint8 RGB arrays, each with its original timestamp.

Each frame is read with its own YUV matrix and range, and the video's colour description
(`Colour`) is kept for the writer, :mod:`veil.media.write`. With ``audio=True`` the reader also
hands out the first audio stream's packets, as they arrive between the frames (`VideoReader.demux`),
for a consumer that needs the sound while the video is still coming (``veil encode``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import av
import numpy as np

from veil.errors import InputError, VideoOpenError
from veil.media.audio import AudioPacket, AudioParams
from veil.media.damage import Damage, decode_video
from veil.media.metadata import video_metadata_dropped
from veil.media.sources import (
    MAX_PIXELS,
    STALL_S,
    Source,
    av_reason,
    check_pixels,
    is_live,
    open_container,
    source_name,
)
from veil.media.yuv import yuv420_to_rgb

__all__ = ["VIDEO_SUFFIXES", "Colour", "VideoInfo", "Frame", "FrameSource", "VideoReader", "probe", "read_frames",
           "upright_rgb", "av_reason"]

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg",
                            ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"})


@dataclass(frozen=True)
class Colour:
    """How a video's pixel values are meant (FFmpeg's AVCOL_* codes; 2 and 0: unspecified)."""

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        return cls(int(frame.color_primaries), int(frame.color_trc), int(frame.colorspace), int(frame.color_range))


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, as displayed (width and height after rotation)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int  # from the container; 0 when it does not say
    duration_s: float
    time_base: Fraction
    rotation: int  # degrees counter-clockwise from the display matrix, applied on read
    codec: str
    audio_streams: int
    colour: Colour = Colour()
    audio: AudioParams | None = None  # the first audio stream, when the reader was asked for audio

    @property
    def has_audio(self) -> bool:
        return self.audio_streams > 0


@dataclass
class Frame:
    """One decoded frame: `image` (H, W, 3) uint8 RGB, upright; `pts` in `time_base` units.

    `damaged`: it came out of a damaged stretch of the file (see `veil.media.damage`). `arrival`:
    when it was decoded (`time.monotonic()` seconds), from which a live run measures its latency.
    """

    image: np.ndarray
    pts: int | None
    time_base: Fraction
    index: int
    damaged: bool = False
    arrival: float = 0.0

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base) if self.pts is not None else float("nan")


@runtime_checkable
class FrameSource(Protocol):
    """What the frame loop (:func:`veil.pipeline.protect_frames`) reads: the video's `info` and its
    frames, upright, in display order, each `Frame` with its index and timestamp, and the `damage`
    met decoding them (filled as frames come). A `VideoReader` is one; a segment of a long video
    (:mod:`veil.batch.segments`) another."""

    info: VideoInfo
    damage: Damage

    def __iter__(self) -> Iterator[Frame]: ...


# swscale's fast path reads a frame of more than 8 bits 1-2 levels too dark; its accurate path
# (full chroma interpolation, exact rounding) does not, at about twice the cost of the fast one.
_ACCURATE = (av.video.reformatter.Interpolation.BILINEAR | av.video.reformatter.Interpolation.FULL_CHR_H_INT
             | av.video.reformatter.Interpolation.ACCURATE_RND)


def upright_rgb(frame: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, read with its own matrix and range, shown upright.

    A frame whose size differs from the video's (a stream that changes resolution midway, as
    recorded video calls and broadcasts do) is scaled to the video's size, as FFmpeg does.
    """
    deep = frame.format.components[0].bits > 8
    width, height = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    resize = {} if (frame.width, frame.height) == (width, height) else {"width": width, "height": height}
    image = None
    if frame.format.name in ("yuv420p", "yuvj420p") and not resize:
        full = frame.format.name == "yuvj420p" or int(frame.color_range) == 2
        image = yuv420_to_rgb(frame.to_ndarray(), int(frame.colorspace), full)
    if image is None:
        image = frame.to_ndarray(format="rgb24", interpolation=_ACCURATE if deep or resize else None, **resize)
    # The display matrix angle is counter-clockwise; showing the frame upright means rotating by it.
    k = (info.rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


class VideoReader:
    """Streams the frames of a video: a file, ``"-"`` (standard input), or a binary file object.

    ``follow``: the file is still being written; reading waits for it to grow. ``audio``: also
    read the first audio stream's packets (`demux`). ``tolerate_damage``: decode past damaged
    packets and a file cut short, as FFmpeg does, marking the frames of damaged stretches and
    counting what was met in `damage`; otherwise the first error raises `VideoOpenError`.

    >>> with VideoReader("clip.mp4") as reader:  # doctest: +SKIP
    ...     for frame in reader:
    ...         frame.image.shape
    """

    def __init__(self, source: Source, *, threads: bool = True, audio: bool = False, follow: bool = False,
                 tolerate_damage: bool = False, max_pixels: int | None = MAX_PIXELS, stall_s: float = STALL_S) -> None:
        self.name = source_name(source)
        self.path = Path(self.name)
        self._container = open_container(source, follow=follow, stall_s=stall_s)
        self._stream = self._container.streams.video[0]
        try:  # what the header declares, before a first frame of that size is decoded
            check_pixels(self.name, self._stream.codec_context.width, self._stream.codec_context.height, max_pixels)
        except InputError:
            self._container.close()
            raise
        self._audio_stream = self._container.streams.audio[0] if audio and self._container.streams.audio else None
        self._audio: deque[AudioPacket] = deque()
        self.tolerate_damage = tolerate_damage
        self.damage = Damage()
        if threads:
            # Frame and slice threads: several times faster decoding on multi-core machines. A live
            # source decodes with slice threads only: frame threads hold frames back, and burst.
            self._stream.thread_type = "SLICE" if is_live(source) else "AUTO"
        codec_ctx = self._stream.codec_context
        try:
            codec_name = codec_ctx.name
        except Exception:  # noqa: BLE001 - an unknown codec has no context name
            codec_name = "unknown"
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        fps = Fraction(rate) if rate else Fraction(25)
        # The first frame is decoded now: it carries the display matrix and proves the stream decodes.
        self._frames = decode_video(self._container, self._stream, self.damage, tolerate=tolerate_damage,
                                    audio_stream=self._audio_stream,
                                    on_audio=lambda p: self._audio.append(AudioPacket.from_av(p)))
        self._first = self._next_frame(0)
        if self._first is None:
            self.close()
            raise VideoOpenError(f"{self.name!r} has a video stream but no decodable frame")
        first = self._first[0]
        rotation = int(round(float(getattr(first, "rotation", 0) or 0) / 90.0)) * 90 % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        duration = (float(self._stream.duration * self._stream.time_base)
                    if self._stream.duration else (self._container.duration or 0) / 1e6)
        frame_count = int(self._stream.frames or 0)
        if duration > 0 and frame_count > 4 * duration * float(fps) + 100:
            frame_count = 0  # a count its duration cannot hold: the header is damaged or lies; not trusted
        self.info = VideoInfo(
            path=self.path, width=width, height=height, fps=fps,
            frame_count=frame_count, duration_s=duration,
            time_base=Fraction(self._stream.time_base or Fraction(1, 90000)),
            rotation=rotation, codec=codec_name,
            audio_streams=len(self._container.streams.audio), colour=Colour.of(first),
            audio=AudioParams.from_stream(self._audio_stream) if self._audio_stream is not None else None,
        )

    def _next_frame(self, index: int) -> tuple[av.VideoFrame, bool] | None:
        try:
            return next(self._frames, None)
        except av.FFmpegError as exc:
            if isinstance(exc, (av.ExitError, OSError)):  # the transport, not the data
                raise VideoOpenError(f"{self.name!r} stopped after {index} frames ({av_reason(exc)})") from None
            raise VideoOpenError(
                f"{self.name!r} is damaged: decoding stopped after {index} frames ({av_reason(exc)})"
            ) from None

    def __iter__(self) -> Iterator[Frame]:
        frame, self._first, index = self._first, None, 0
        if frame is None:
            raise RuntimeError("a VideoReader can be iterated once")
        # Each frame is handed out once the next one has decoded: the last frame of a file cut short
        # may be a half-decoded one, and is known to be the last only then. (A source that does not
        # list its frames, a live one, cannot be cut short: its frames go out at once.)
        hold = bool(self.info.frame_count)
        held: Frame | None = None
        while frame is not None:
            decoded, damaged = frame
            if damaged and held is not None and None not in (decoded.pts, held.pts) and decoded.pts <= held.pts:
                # Out of order inside a damaged stretch: the damage broke the decoder's reordering. The
                # frame is dropped (it counts as lost). Timestamps that restart elsewhere (joined MPEG-TS
                # parts) are the stream's own: those frames are kept.
                frame = self._next_frame(index)
                continue
            out = Frame(image=upright_rgb(decoded, self.info), pts=decoded.pts,
                        time_base=Fraction(decoded.time_base or self.info.time_base), index=index, damaged=damaged,
                        arrival=time.monotonic())
            if held is not None:
                yield self._counted(held)
            held = out
            if not hold:
                yield self._counted(held)
                held = None
            index += 1
            frame = self._next_frame(index)
        # A file cut short often decodes without an error, just fewer frames than its index lists.
        cut_short = bool(self.info.frame_count) and index < self.info.frame_count - 1
        if cut_short and self.tolerate_damage:
            self.damage.lost = self.info.frame_count - index
            # The file ends before its last frame: that frame may be a half-decoded one.
            held.damaged |= held.time_s < self.info.duration_s - 2 / float(self.info.fps)
        if held is not None:
            yield self._counted(held)
        if cut_short and not self.tolerate_damage:
            raise VideoOpenError(f"{self.name!r} is truncated: it lists {self.info.frame_count} frames "
                                 f"but only {index} could be decoded")

    def _counted(self, frame: Frame) -> Frame:
        if frame.damaged:
            self.damage.add_frame(frame.time_s)
        return frame

    def metadata_dropped(self, *, keep_metadata: bool, keep_audio: bool) -> list[str]:
        """What of the file's metadata and streams a protected copy lacks (`veil.media.metadata`)."""
        return video_metadata_dropped(self._container, keep_metadata=keep_metadata, keep_audio=keep_audio)

    def demux(self) -> Iterator[Frame | AudioPacket]:
        """The frames and the audio packets (with ``audio=True``) in the order they arrive."""
        for frame in self:
            while self._audio:
                yield self._audio.popleft()
            yield frame
        while self._audio:
            yield self._audio.popleft()

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> VideoInfo:
    """The `VideoInfo` of a video file (raises `VideoOpenError` if it is not one)."""
    with VideoReader(path, threads=False, max_pixels=max_pixels) as reader:
        return reader.info


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Stream the frames of a video as (H, W, 3) uint8 RGB arrays."""
    with VideoReader(path) as reader:
        for frame in reader:
            yield frame.image
