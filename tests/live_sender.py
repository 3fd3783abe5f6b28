"""A live sender for tests and benchmarks: a real clip remuxed (not re-encoded) as MPEG-TS to a
loopback URL at the clip's own rate, as an IP camera or an encoder box sends it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av


def send(clip: Path, url: str, *, realtime: bool = True, retry_s: float = 20.0, stop_after: int | None = None,
         hold_s: float = 0.0, sent_at: list[float] | None = None) -> int:
    """Send `clip`'s packets to `url` (retrying the connection for `retry_s` while the receiver
    starts), the first `stop_after` video packets only if given, then keep the connection open,
    silent, for `hold_s` (a stalled camera). Returns the video packets sent; `sent_at` gets each
    video packet's send time."""
    deadline = time.monotonic() + retry_s
    src = av.open(str(clip))
    streams = [src.streams.video[0], *src.streams.audio[:1]]
    while True:  # PyAV connects when the header is written: retry that until the receiver listens
        # Each packet goes out at once, as a camera sends it (MPEG-TS otherwise holds 0.7 s).
        out = av.open(url, "w", format="mpegts", container_options={"max_delay": "0", "flush_packets": "1"})
        mapping = {st.index: out.add_stream_from_template(st) for st in streams}
        try:
            out.start_encoding()
            break
        except (av.FFmpegError, OSError):
            out.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sent = 0
    with src, out:
        # In time order, as a camera sends them: a file stores its audio and video in chunks of
        # half a second, which the muxer would otherwise hold back to interleave.
        packets = sorted((p for p in src.demux(*streams) if p.dts is not None and p.size),
                         key=lambda p: float(p.dts * p.time_base))
        start = time.monotonic()
        for packet in packets:
            if realtime:
                due = start + float(packet.dts * packet.time_base)
                time.sleep(max(0.0, due - time.monotonic()))
            is_video = packet.stream.type == "video"
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
            if is_video:
                sent += 1
                if sent_at is not None:
                    sent_at.append(time.monotonic())
                if stop_after is not None and sent >= stop_after:
                    break
        time.sleep(hold_s)
    return sent


def send_in_background(clip: Path, url: str, **kwargs) -> tuple[threading.Thread, dict]:
    """`send` on a thread; the dict gets "sent" (or "error") when it ends."""
    result: dict = {}

    def run() -> None:
        try:
            result["sent"] = send(clip, url, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result
