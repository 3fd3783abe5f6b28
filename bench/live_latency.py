"""Live latency: a real clip served live over loopback, protected by `veil protect` to a loopback
sink, timed at the receiver; against the same path without protection, in the same run.

The sender (tests/live_sender.py) remuxes the clip as MPEG-TS to ``tcp://127.0.0.1`` at the clip's
own rate, in time order, as a camera sends it, and notes when each video packet leaves. The
middle is either ``veil protect SOURCE -o tcp://127.0.0.1:PORT --method blur`` (CenterFace, the
live defaults: look-ahead 1, detection on every other frame, x264 zerolatency, late after 0.5 s;
once with late frames masked, once dropped) or the pass-through
floor: the same media layer decoding and re-encoding every frame with no detection and no
protection. The receiver decodes what arrives and notes when each frame comes. Latency is a
frame's arrival at the receiver minus its packet's departure from the sender (matched by
timestamp); "added" is veil's minus the pass-through's, at the same percentile.

The clips: the store's single_face.mp4 looped to 20 s (640x360, 30 fps), and the WolfgangLanger
clip scaled to 1280x720 (24 fps, 20 s), made here.

    python bench/live_latency.py          # writes bench/results/live_latency.md
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from live_sender import send_in_background  # noqa: E402

from veil.media.read import read_frames  # noqa: E402
from veil.media.write import EncodeOptions, write_frames  # noqa: E402
from veil.models.store import fetch  # noqa: E402

PASS_THROUGH = """
import sys
from veil.media.read import VideoReader
from veil.media.write import EncodeOptions, VideoWriter
from veil.media.audio import AudioPacket
with VideoReader(sys.argv[1], audio=True) as r:
    i = r.info
    w = VideoWriter(sys.argv[2], width=i.width, height=i.height, fps=i.fps, time_base=i.time_base,
                    options=EncodeOptions(extra={"tune": "zerolatency"}), audio=[i.audio] if i.audio else ())
    for item in r.demux():
        if isinstance(item, AudioPacket):
            w.write_audio(item)
        else:
            w.write(item.image, item.pts)
    w.close()
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clips(folder: Path) -> dict[str, Path]:
    """The two bench clips, made from the store's real ones (sound kept)."""
    loop = folder / "single_face_x8_640x360_30fps.mp4"
    frames = list(read_frames(fetch("media/single_face.mp4")))
    write_frames(loop, [f for _ in range(8) for f in frames], Fraction(30), options=EncodeOptions(crf=18))
    big = folder / "wolfganglanger_1280x720_24fps.mp4"
    src = fetch("media/WolfgangLanger_Pexels.mp4")
    write_frames(big, (cv2.resize(f, (1280, 720), interpolation=cv2.INTER_CUBIC) for f in read_frames(src)),
                 Fraction(24000, 1001), audio_from=src, options=EncodeOptions(crf=18))
    return {"640x360 @ 30 fps": loop, "1280x720 @ 24 fps": big}


def run(clip: Path, middle: list[str], report: Path | None) -> dict:
    """Send `clip` through `middle` (a command reading tcp IN and writing tcp OUT); time it."""
    port_in, port_out = _port(), _port()
    arrivals: dict[float, float] = {}
    received = {"frames": 0}

    def receive() -> None:
        # A live viewer's probing (as veil's own): FFmpeg's default analyses 5 s of the stream, and
        # waits for about 20 frames to guess their rate, before the first frame is shown.
        with av.open(f"tcp://127.0.0.1:{port_out}?listen", "r", timeout=(120, 20),
                     options={"analyzeduration": "100000"}) as c:
            stream = c.streams.video[0]
            first = None
            for packet in c.demux(stream):
                for frame in packet.decode():
                    now = time.monotonic()
                    t = float(frame.pts * frame.time_base)
                    first = t if first is None else first
                    arrivals[round(t - first, 3)] = now
                    received["frames"] += 1

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    command = [arg.replace("{IN}", f"tcp://127.0.0.1:{port_in}?listen").replace("{OUT}", f"tcp://127.0.0.1:{port_out}")
               for arg in middle]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    sent_at: list[float] = []
    sender, result = send_in_background(clip, f"tcp://127.0.0.1:{port_in}", sent_at=sent_at, retry_s=60)
    sender.join()
    _, errors = proc.communicate(timeout=120)
    receiver.join(timeout=30)
    if proc.returncode != 0 or "error" in result:
        raise SystemExit(f"{command[2:4]}: exit {proc.returncode}: {errors or result}")
    # The video packets went out in decode order; each frame is matched to its own packet by its
    # timestamp, counted from the first frame shown (the receiver's stream keeps the same clock).
    with av.open(str(clip)) as c:
        decode_pts = [float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.size and p.pts is not None]
    first = min(decode_pts)
    sent_by_pts = {round(t - first, 3): s for t, s in zip(decode_pts, sent_at)}
    delays = [arrivals[k] - sent_by_pts[k] for k in sorted(arrivals) if k in sent_by_pts]
    if len(delays) < 0.9 * len(arrivals):
        raise SystemExit(f"only {len(delays)} of {len(arrivals)} frames matched their packets")
    out = {"sent": len(sent_at), "received": received["frames"], "p50_ms": 1000 * float(np.percentile(delays, 50)),
           "p95_ms": 1000 * float(np.percentile(delays, 95)), "max_ms": 1000 * float(np.max(delays))}
    if report is not None:
        s = json.loads(report.read_text())["files"][0]
        out.update(masked_late=s["frames_masked_late"], dropped_late=s["frames_dropped_late"], faces=s["faces"],
                   veil_latency=s["latency_ms"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "live_latency.md")
    args = parser.parse_args()
    veil = [sys.executable, "-c", "from veil.cli import main; main()"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, clip in make_clips(tmp).items():
            floor = run(clip, [sys.executable, "-c", PASS_THROUGH, "{IN}", "{OUT}"], None)
            report = tmp / "live.json"
            for policy in ("mask", "drop"):
                protected = run(clip, [*veil, "protect", "{IN}", "-o", "{OUT}", "--method", "blur", "-q", "--json",
                                       str(report), "--when-late", policy], report)
                rows.append((name, policy, floor, protected))
                print(name, "pass-through", floor, f"\nveil (late: {policy})", protected, flush=True)
    lines = ["# Live latency: `veil protect` on a loopback stream vs a pass-through", "",
             "Command: `python bench/live_latency.py` (2 CPU cores, no GPU). Latency: a frame's arrival at the "
             "receiver minus its packet's departure from the sender; added = veil minus the pass-through.", "",
             "| clip | path | frames sent | frames received | late, masked | late, dropped | p50 ms | p95 ms | max ms "
             "| added p50 ms | added p95 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, policy, floor, veil_row in rows:
        if policy == "mask":
            lines.append(f"| {name} | pass-through (decode + encode) | {floor['sent']} | {floor['received']} | | | "
                         f"{floor['p50_ms']:.0f} | {floor['p95_ms']:.0f} | {floor['max_ms']:.0f} | | |")
        lines.append(f"| {name} | veil blur, --when-late {policy} | {veil_row['sent']} | {veil_row['received']} | "
                     f"{veil_row['masked_late']} | {veil_row['dropped_late']} | {veil_row['p50_ms']:.0f} | "
                     f"{veil_row['p95_ms']:.0f} | {veil_row['max_ms']:.0f} | "
                     f"{veil_row['p50_ms'] - floor['p50_ms']:.0f} | {veil_row['p95_ms'] - floor['p95_ms']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
