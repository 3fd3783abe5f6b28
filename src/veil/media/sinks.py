"""Where a protected video goes: a file (written to a temporary file, renamed when complete), or
live: a network stream (``rtmp://``, ``rtsp://``, ``srt://``, ``udp://``, ``tcp://``), an HLS
playlist (``out/index.m3u8``, its segments beside it) or ``-`` (standard output, MPEG-TS).

A live sink is written as it goes (there is nothing to rename: a viewer is watching); its
container is the one its protocol carries: FLV for RTMP, MPEG-TS for SRT, UDP, TCP and pipes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av

from veil.errors import OutputError, WriteError
from veil.media.sources import av_reason

__all__ = ["is_live_target", "live_format", "open_live_output", "target_name"]

_FORMATS = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp", "rtsps": "rtsp", "srt": "mpegts", "udp": "mpegts",
            "tcp": "mpegts"}


def _scheme(target: str) -> str:
    return target.split("://", 1)[0].lower() if "://" in target else ""


def is_live_target(target: str | os.PathLike) -> bool:
    """A sink written as it goes: a stream URL, an HLS playlist or standard output."""
    text = str(target)
    return text == "-" or _scheme(text) in _FORMATS or text.lower().endswith(".m3u8")


def live_format(target: str | os.PathLike) -> str:
    """The container a live sink is written in."""
    text = str(target)
    if text.lower().endswith(".m3u8"):
        return "hls"
    return _FORMATS.get(_scheme(text), "mpegts")


def target_name(target: str | os.PathLike) -> str:
    return "<stdout>" if str(target) == "-" else str(target)


def open_live_output(target: str | os.PathLike) -> av.container.OutputContainer:
    """The live sink opened for writing. Raises `OutputError` when it cannot be (a refused
    connection, an unwritable playlist folder)."""
    text, fmt = str(target), live_format(target)
    options: dict[str, str] = {}
    if fmt == "hls":
        folder = Path(text).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the playlist folder {str(folder)!r}: {exc.strerror}") from None
        options = {"hls_time": "2", "hls_list_size": "0", "hls_flags": "independent_segments"}
    elif fmt == "rtsp":
        options = {"rtsp_transport": "tcp"}
    else:  # each packet out at once: MPEG-TS would otherwise hold 0.7 s of them
        options = {"max_delay": "0", "flush_packets": "1"}
    try:
        if text == "-":
            return av.open(os.fdopen(os.dup(sys.stdout.fileno()), "wb"), "w", format=fmt)
        return av.open(text, "w", format=fmt, options=options)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise WriteError(f"cannot open the sink {target_name(target)!r}: {av_reason(exc)}") from None
