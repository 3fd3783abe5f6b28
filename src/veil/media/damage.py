"""Decoding past damage, as FFmpeg does: a recording left by a crash is protected, not refused.

A phone or body camera that loses power leaves a file with a damaged run of bytes, or one cut
short. FFmpeg's decoders conceal the damage (they skip the packets they cannot decode and draw the
frames that follow from what they have, until the next keyframe resynchronises them); strict
decoding stops at the first error and loses the rest. `decode_video` decodes the way FFmpeg does
and says which frames came out of a damaged stretch: every frame from a failed packet up to the
next clean keyframe, and every frame the decoder itself flags as corrupt. Such frames are garbled
(smeared blocks of earlier frames), and a detector cannot be trusted on them: the pipeline writes
them fully masked by default (``--on-damage mask``), protects them like any other frame
(``protect``), or keeps the old strictness and stops (``stop``).

`Damage` counts what happened, for the summary: failed packets, damaged frames and their time
ranges, frames the container lists but that never decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av

__all__ = ["ON_DAMAGE", "Damage", "decode_video"]

ON_DAMAGE = ("mask", "protect", "stop")
"""What to do with the frames of a damaged stretch: mask them whole, protect them, or stop."""


@dataclass
class Damage:
    """What decoding a damaged video met."""

    errors: int = 0  # packets (or container reads) that failed to decode
    frames: int = 0  # frames that came out of a damaged stretch
    lost: int = 0  # frames the container lists that never decoded
    ranges: list[list[float]] = field(default_factory=list)  # [first, last] times (s) of damaged runs

    def add_frame(self, time_s: float, gap_s: float = 0.5) -> None:
        """Count one damaged frame at `time_s`; runs closer than `gap_s` are one range."""
        self.frames += 1
        if self.ranges and time_s - self.ranges[-1][1] <= gap_s:
            self.ranges[-1][1] = max(self.ranges[-1][1], time_s)
        else:
            self.ranges.append([time_s, time_s])

    @property
    def any(self) -> bool:
        return bool(self.errors or self.frames or self.lost)


def _stalled(exc: av.FFmpegError) -> bool:
    """An error of the transport (a timeout, a dropped connection), not of the data."""
    return isinstance(exc, (av.ExitError, OSError))


def decode_video(container: av.container.InputContainer, stream: av.video.stream.VideoStream, damage: Damage, *,
                 tolerate: bool, audio_stream: av.stream.Stream | None = None,
                 on_audio: Callable[[av.Packet], None] | None = None) -> Iterator[tuple[av.VideoFrame, bool]]:
    """The decoded frames of `stream`, each with whether it came out of a damaged stretch.

    `tolerate` False: the first error is raised (`av.FFmpegError`), as strict decoding does. With
    `audio_stream`, its packets are demuxed too and handed to `on_audio` in arrival order.
    """
    streams = (stream,) if audio_stream is None else (stream, audio_stream)
    packets = container.demux(*streams)
    suspect = False
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            if not tolerate or _stalled(exc):
                raise  # a stream that stopped sending is not damage: the caller may reconnect
            damage.errors += 1  # the container itself cannot be read on: what is decoded is all there is
            break
        if packet.stream.type == "audio":
            if packet.size and on_audio is not None:
                on_audio(packet)
            continue
        try:
            frames = packet.decode()
        except av.FFmpegError:
            if not tolerate:
                raise
            damage.errors += 1
            suspect = True
            continue
        for frame in frames:
            if frame.key_frame and not frame.is_corrupt:
                suspect = False
            yield frame, suspect or bool(frame.is_corrupt)
    try:  # the frames the decoder still holds, after a read error cut the demuxing short
        for frame in stream.codec_context.decode(None):
            yield frame, True
    except av.FFmpegError:
        damage.errors += 1
