"""Reading a source video for the codec: frames and audio packets in arrival order.

The codec's input can be a finished file, a file that is still growing (a recorder writing it),
or a pipe. `demux` yields video frames and audio packets as the container delivers them, so the
encoder can emit a chunk as soon as its frames (and the audio that keys it) have arrived.
`GrowingFile` makes a file that is still being written look like a slow pipe: at its current end
it waits for more bytes and stops only after ``idle_s`` seconds without growth. Only streamable
containers (Matroska, MPEG-TS, fragmented MP4) can be read before they are finished; a plain MP4
keeps its index at the end.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from veil.errors import InputError

from veil.stream.audio import AudioDecoder, AudioPacket, AudioParams, frame_features

__all__ = ["SourceInfo", "MediaError", "GrowingFile", "open_source", "demux", "load_clip"]


class MediaError(InputError, ValueError):
    """The input cannot be read as a video."""


@dataclass(frozen=True)
class SourceInfo:
    width: int
    height: int
    fps: Fraction
    frame_count: int  # 0 when unknown (live input)
    audio: AudioParams | None


class GrowingFile(io.RawIOBase):
    """A read-only file whose reads wait at the end until it grows or stays idle ``idle_s``."""

    def __init__(self, path: str | Path, idle_s: float = 2.0, poll_s: float = 0.05) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.idle_s, self.poll_s = idle_s, poll_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        waited = 0.0
        while True:
            n = self._f.readinto(buffer)
            if n or waited >= self.idle_s:
                return n or 0
            time.sleep(self.poll_s)
            waited += self.poll_s

    def close(self) -> None:
        self._f.close()
        super().close()


def open_source(source: str | Path | BinaryIO, follow: bool = False) -> av.container.InputContainer:
    """Open a path, a growing file (``follow``) or a binary file object ("-" means stdin)."""
    try:
        if isinstance(source, (str, Path)) and str(source) == "-":
            return av.open(os.fdopen(os.dup(0), "rb"), "r")
        if follow and isinstance(source, (str, Path)):
            return av.open(io.BufferedReader(GrowingFile(source)), "r")
        return av.open(source if not isinstance(source, Path) else str(source), "r")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot open {source!s} as a video: {exc}") from exc


def source_info(container: av.container.InputContainer) -> SourceInfo:
    if not container.streams.video:
        raise MediaError(f"{container.name!r} has no video stream")
    v = container.streams.video[0]
    fps = Fraction(v.average_rate or v.guessed_rate or 30)
    audio = AudioParams.from_stream(container.streams.audio[0]) if container.streams.audio else None
    return SourceInfo(v.codec_context.width, v.codec_context.height, fps, int(v.frames or 0), audio)


def demux(container: av.container.InputContainer) -> Iterator[np.ndarray | AudioPacket]:
    """Video frames ((H, W, 3) uint8 RGB) and audio packets in the order they arrive."""
    v = container.streams.video[0]
    v.thread_type = "AUTO"
    streams = [v] + ([container.streams.audio[0]] if container.streams.audio else [])
    for packet in container.demux(streams):
        if packet.stream.type == "audio":
            if packet.size:
                yield AudioPacket.from_av(packet)
            continue
        for frame in packet.decode():
            yield frame.to_ndarray(format="rgb24")


def load_clip(path: str | Path, n_mels: int, max_frames: int = 0) -> tuple[np.ndarray, np.ndarray, Fraction]:
    """A whole (short) video in memory with each frame's audio feature; for training and tests.

    Shape: -> frames (N, H, W, 3) uint8, features (N, n_mels) float32, fps
    """
    container = open_source(path)
    info = source_info(container)
    frames: list[np.ndarray] = []
    decoder = AudioDecoder(info.audio) if info.audio else None
    for item in demux(container):
        if isinstance(item, AudioPacket):
            if decoder:
                decoder.push(item)
        elif not max_frames or len(frames) < max_frames:
            frames.append(item)
    container.close()
    if not frames:
        raise MediaError(f"{path!s} has no decodable video frames")
    if decoder is None:
        feats = frame_features(np.zeros(0, np.float32), 16000, Fraction(0), info.fps, 0, len(frames), n_mels)
    else:
        decoder.flush()
        feats = frame_features(decoder.pcm, info.audio.sample_rate, decoder.start or Fraction(0), info.fps,
                               0, len(frames), n_mels)
    return np.stack(frames), feats, info.fps
