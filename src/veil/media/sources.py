"""Where a video comes from: a file, a file that is still being written, a pipe or a file object.

`open_container` opens any of them with PyAV and says, in a `VideoOpenError` a user can act on,
why one cannot be read. `GrowingFile` makes a file that a recorder is still writing look like a
slow pipe: at its current end it waits for more bytes and stops only after ``idle_s`` seconds
without growth. Only streamable containers (Matroska, MPEG-TS, fragmented MP4) can be read before
they are finished; a plain MP4 keeps its index at the end.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import BinaryIO, Union

import av

from veil.errors import InputError, VideoOpenError

__all__ = ["Source", "MAX_PIXELS", "GrowingFile", "open_container", "source_name", "av_reason", "check_pixels"]

MAX_PIXELS = 250_000_000
"""Largest picture veil decodes, in pixels (``--max-pixels``): beyond the 200-megapixel photos of
the largest phone sensors and 8K video (33 MP), far below what a hostile header can claim (a
100,000 x 100,000 picture would need 30 GB as RGB)."""

Source = Union[str, os.PathLike, BinaryIO]
"""A path, ``"-"`` (standard input), or a readable binary file object."""


def av_reason(exc: Exception) -> str:
    """A short reason for a PyAV / OS error, for a message a user can act on."""
    text = str(exc).split(":")[0] if isinstance(exc, av.FFmpegError) else str(exc)
    return getattr(exc, "strerror", None) or text or type(exc).__name__


class GrowingFile(io.RawIOBase):
    """A read-only file whose reads wait at the end until it grows or stays idle ``idle_s``."""

    def __init__(self, path: str | os.PathLike, idle_s: float = 2.0, poll_s: float = 0.05) -> None:
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


def check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a picture larger than `max_pixels` (None: no limit) before it is decoded."""
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"{name!r} declares {width}x{height} pixels ({width * height / 1e6:.0f} MP), more "
                             f"than --max-pixels {max_pixels} allows; raise it if the file is what it says")


def _is_path(source: Source) -> bool:
    return isinstance(source, (str, os.PathLike))


def source_name(source: Source) -> str:
    """How messages name a source: its path, ``<stdin>``, or the file object's name."""
    if _is_path(source):
        return "<stdin>" if str(source) == "-" else str(source)
    return str(getattr(source, "name", "<stream>"))


def open_container(source: Source, *, follow: bool = False) -> av.container.InputContainer:
    """The source opened for reading, with at least one video stream.

    ``follow``: a path is a file still being written (read through `GrowingFile`). Raises
    `VideoOpenError` for a missing, empty, unreadable or video-less source.
    """
    name = source_name(source)
    if _is_path(source) and str(source) != "-":
        path = Path(source)
        if not path.exists():
            raise VideoOpenError(f"{name!r} does not exist")
        if path.is_dir():
            raise VideoOpenError(f"{name!r} is a folder, not a video")
        if path.stat().st_size == 0 and not follow:
            raise VideoOpenError(f"{name!r} is empty (0 bytes)")
    try:
        if _is_path(source) and str(source) == "-":
            container = av.open(os.fdopen(os.dup(0), "rb"), "r")
        elif _is_path(source) and follow:
            container = av.open(io.BufferedReader(GrowingFile(source)), "r")
        elif _is_path(source):
            container = av.open(str(source), "r")
        else:
            container = av.open(source, "r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise VideoOpenError(f"{name!r} is not a readable video ({av_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoOpenError(f"{name!r} has no video stream")
    return container
