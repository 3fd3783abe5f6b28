"""Where a video comes from: a file, a file that is still being written, a pipe, a file object,
a network stream (``rtsp://``, ``rtmp://``, ``srt://``, ``udp://``, ``tcp://``, ``http(s)://``
including HLS) or a camera (``/dev/video0``, ``camera:0``).

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

__all__ = ["Source", "MAX_PIXELS", "LIVE_SCHEMES", "GrowingFile", "open_container", "source_name", "av_reason",
           "check_pixels", "is_live", "is_url", "camera_device"]

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp", "http", "https")
"""URL schemes veil reads (and, but http, writes) live; FFmpeg's own protocols."""
STALL_S = 10.0
"""How long a network read may wait before the source counts as stalled (seconds)."""

MAX_PIXELS = 250_000_000
"""Largest picture veil decodes, in pixels (``--max-pixels``): beyond the 200-megapixel photos of
the largest phone sensors and 8K video (33 MP), far below what a hostile header can claim (a
100,000 x 100,000 picture would need 30 GB as RGB)."""

Source = Union[str, os.PathLike, BinaryIO]
"""A path, ``"-"`` (standard input), or a readable binary file object."""


def av_reason(exc: Exception) -> str:
    """A short reason for a PyAV / OS error, for a message a user can act on."""
    if isinstance(exc, av.ExitError):  # FFmpeg's name for veil's own timeout on a silent source
        return "nothing arrived within the stall timeout"
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


def is_url(source: Source) -> bool:
    """A URL of one of FFmpeg's network protocols veil takes (`LIVE_SCHEMES`)."""
    text = str(source) if _is_path(source) else ""
    return "://" in text and text.split("://", 1)[0].lower() in LIVE_SCHEMES


def camera_device(source: Source) -> str | None:
    """The V4L2 device of a camera source (``camera:0`` is ``/dev/video0``), else None."""
    text = str(source) if _is_path(source) else ""
    if text.startswith("camera:") and text[7:].isdigit():
        return f"/dev/video{text[7:]}"
    if text.startswith("/dev/video"):
        return text
    return None


def is_live(source: Source) -> bool:
    """A source that arrives as it happens: a network stream, a camera or a pipe (``-``)."""
    return is_url(source) or camera_device(source) is not None or (_is_path(source) and str(source) == "-")


def _url_options(url: str, stall_s: float) -> dict[str, str]:
    """FFmpeg options that make a network source fail (not hang) when it stalls."""
    scheme = url.split("://", 1)[0].lower()
    stall_us = str(int(stall_s * 1e6))  # FFmpeg's unit
    # FFmpeg analyses 5 s of a stream before handing out its first frame; live, those frames would
    # all be late. A tenth of a second finds a camera's codec parameters.
    options = {"rw_timeout": stall_us, "analyzeduration": "100000"}
    if scheme.startswith("rtsp"):
        options["rtsp_transport"] = "tcp"
    if scheme.startswith("rtsp") or scheme in ("udp", "srt", "tcp"):
        options["timeout"] = stall_us
    return options


def source_name(source: Source) -> str:
    """How messages name a source: its path, ``<stdin>``, or the file object's name."""
    if _is_path(source):
        return "<stdin>" if str(source) == "-" else str(source)
    return str(getattr(source, "name", "<stream>"))


def open_container(source: Source, *, follow: bool = False, stall_s: float = STALL_S) -> av.container.InputContainer:
    """The source opened for reading, with at least one video stream.

    ``follow``: a path is a file still being written (read through `GrowingFile`). ``stall_s``: a
    network source that sends nothing for this long fails (and a live run may reconnect). Raises
    `VideoOpenError` for a missing, empty, unreadable or video-less source.
    """
    name = source_name(source)
    device = camera_device(source)
    if _is_path(source) and str(source) != "-" and not is_url(source) and device is None:
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
        elif is_url(source):
            # A listening source waits for its sender as long as it takes; once open, silence stalls it.
            listen = "listen" in str(source).split("?", 1)[-1]
            container = av.open(str(source), "r", options=_url_options(str(source), stall_s),
                                timeout=(None if listen else stall_s, stall_s))
        elif device is not None:
            container = av.open(device, "r", format="v4l2")
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
