"""Live: a stream served over loopback is protected as it comes, with its sound, to a file or to
another stream; late frames, stalls, reconnection, Ctrl-C and a refusing sink behave as promised."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
from live_sender import send_in_background

from veil.detect import get_detector
from veil.export import read_tracks
from veil.media.read import VideoReader

VEIL = [sys.executable, "-c", "from veil.cli import main; main()"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live(args: list, sender_kwargs: dict | None = None, clip=None, *, wait: float = 120, after=None):
    """Run `veil protect tcp://...?listen ARGS` and send `clip` to it; returns (process, sender result)."""
    port = _port()
    proc = subprocess.Popen([*VEIL, "protect", f"tcp://127.0.0.1:{port}?listen", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    thread, sent = send_in_background(clip, f"tcp://127.0.0.1:{port}", **(sender_kwargs or {}))
    if after is not None:
        after(proc, thread)
    thread.join(timeout=wait)
    _, errors = proc.communicate(timeout=wait)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", errors), sent


def _covered(frames: list[np.ndarray], every: int = 6) -> int:
    """Faces a thorough detector (MTCNN, full resolution) still finds in the frames."""
    judge = get_detector("mtcnn", detect_size=None)
    return sum(len(judge.detect(f)) for f in frames[::every])


@pytest.fixture(scope="module")
def clip(media):
    return media("single_face.mp4")  # 72 frames, 30 fps, one face throughout, with sound


def test_a_live_stream_is_protected_to_a_file_with_its_sound(clip, tmp_path):
    out, report = tmp_path / "live.mp4", tmp_path / "live.json"
    proc, sent = _live(["-o", out, "--json", report], clip=clip)
    assert proc.returncode == 0, proc.stderr
    assert sent == {"sent": 72}
    summary = json.loads(report.read_text())["files"][0]
    assert summary["frames"] + summary["frames_dropped_late"] == 72
    assert summary["faces"] >= 60 and summary["latency_ms"]["p95"] > 0
    assert "latency p50" in proc.stderr
    with VideoReader(out) as reader:
        frames = [f.image for f in reader]
        assert reader.info.audio_streams == 1
    assert len(frames) == summary["frames"]
    assert _covered(frames) == 0


def test_a_live_stream_is_forwarded_to_another_stream(clip, tmp_path):
    port = _port()
    received: dict = {}

    def receive() -> None:
        with av.open(f"tcp://127.0.0.1:{port}?listen", "r", timeout=60) as c:
            received["audio"] = len(c.streams.audio)
            received["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    time.sleep(0.5)
    proc, sent = _live(["-o", f"tcp://127.0.0.1:{port}", "-q"], clip=clip)
    receiver.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert received["audio"] == 1 and len(received["frames"]) >= 70
    assert _covered(received["frames"]) == 0


def test_late_frames_are_masked_or_dropped_never_sent_unprotected(clip, tmp_path):
    out, report = tmp_path / "late.mp4", tmp_path / "late.json"
    # a 1 ms budget: every frame that waits behind a detection is late, and is sent fully masked
    proc, _ = _live(["-o", out, "--json", report, "--max-delay", "0.001", "--export-tracks", tmp_path / "t.csv"],
                    clip=clip)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(report.read_text())["files"][0]
    assert summary["frames"] == 72 and summary["frames_masked_late"] >= 10 and summary["frames_dropped_late"] == 0
    late = read_tracks(tmp_path / "t.csv").masked  # the export lists them, with the reason
    assert len(late) == summary["frames_masked_late"] and set(late.values()) == {"late"}
    with VideoReader(out) as reader:
        frames = [f.image for f in reader]
    assert sum(f.max() <= 16 for f in frames) >= summary["frames_masked_late"]  # masked whole
    assert _covered(frames, every=1) == 0  # and every other frame protected
    proc, _ = _live(["-o", tmp_path / "drop.mp4", "--json", report, "--max-delay", "0.001", "--when-late", "drop"],
                    clip=clip)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(report.read_text())["files"][0]
    assert summary["frames_dropped_late"] >= 10 and summary["frames"] == 72 - summary["frames_dropped_late"]
    with VideoReader(tmp_path / "drop.mp4") as reader:
        assert len(list(reader)) == summary["frames"]


def test_a_stalled_source_ends_the_stream_with_a_playable_file_and_exit_1(clip, tmp_path):
    out = tmp_path / "stalled.mp4"
    # the sender sends a second of frames, then goes silent without closing the connection
    proc, _ = _live(["-o", out, "--stall-timeout", "1"], {"stop_after": 30, "hold_s": 4}, clip)
    assert proc.returncode == 1 and "ended early" in proc.stderr
    with VideoReader(out) as reader:
        frames = list(reader)
    assert 20 <= len(frames) <= 30


def test_a_stalled_source_is_reconnected(clip, tmp_path):
    port = _port()
    out, report = tmp_path / "again.mp4", tmp_path / "again.json"
    proc = subprocess.Popen([*VEIL, "protect", f"tcp://127.0.0.1:{port}?listen", "-o", str(out), "--json",
                             str(report), "--stall-timeout", "1", "--reconnect", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, _ = send_in_background(clip, f"tcp://127.0.0.1:{port}", stop_after=30, hold_s=3)
    first.join(timeout=60)
    second, _ = send_in_background(clip, f"tcp://127.0.0.1:{port}", stop_after=30)
    second.join(timeout=60)
    _, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    summary = json.loads(report.read_text())["files"][0]
    assert summary["reconnects"] == 1 and 40 <= summary["frames"] <= 60
    with VideoReader(out) as reader:
        pts = [f.time_s for f in reader]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # the second connection's clock carries on


def test_ctrl_c_ends_the_stream_cleanly(clip, tmp_path):
    out = tmp_path / "stopped.mp4"

    def interrupt(proc, _thread) -> None:
        # Once frames are being written (a loaded machine may take seconds to start; a signal that
        # comes while the source is still being opened is another test), then about a second more.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.name.lstrip(".").startswith("stopped")
                                                      for p in tmp_path.iterdir()):
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)

    proc, _ = _live(["-o", out], {"hold_s": 10}, clip, after=interrupt)
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stderr
    with VideoReader(out) as reader:
        assert len(list(reader)) >= 10  # finalised: it plays


def test_a_refusing_sink_is_exit_1(clip):
    proc, _ = _live(["-o", f"tcp://127.0.0.1:{_port()}"], {"retry_s": 5}, clip, wait=60)
    assert proc.returncode == 1 and "cannot open the sink" in proc.stderr


def test_python_code_gets_the_protected_frames(clip):
    from veil import protect_stream

    port = _port()
    thread, _ = send_in_background(clip, f"tcp://127.0.0.1:{port}")
    frames = list(protect_stream(f"tcp://127.0.0.1:{port}?listen"))
    thread.join(timeout=60)
    assert len(frames) >= 60 and frames[0].shape == (360, 640, 3)
    assert _covered(frames) == 0


def test_stdout_and_hls_sinks(clip, tmp_path):
    port = _port()
    with open(tmp_path / "piped.ts", "wb") as piped:
        proc = subprocess.Popen([*VEIL, "protect", f"tcp://127.0.0.1:{port}?listen", "-o", "-", "-q"],
                                stdout=piped, stderr=subprocess.PIPE)
        thread, _ = send_in_background(clip, f"tcp://127.0.0.1:{port}")
        thread.join(timeout=60)
        _, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    with VideoReader(tmp_path / "piped.ts") as reader:
        assert len(list(reader)) >= 70 and reader.info.audio_streams == 1
    playlist = tmp_path / "hls" / "index.m3u8"
    proc, _ = _live(["-o", playlist, "-q"], clip=clip)
    assert proc.returncode == 0, proc.stderr
    assert "#EXTM3U" in playlist.read_text() and list(playlist.parent.glob("*.ts"))
    with VideoReader(playlist) as reader:
        frames = [f.image for f in reader]
    assert len(frames) >= 70 and _covered(frames) == 0


def test_the_preview_serves_the_protected_frames(clip):
    import urllib.request

    import cv2

    from veil.media.preview import Preview
    from veil.pipeline import ProtectOptions
    from veil.pipeline.live import protect_live

    port, preview = _port(), Preview(0)
    thread, _ = send_in_background(clip, f"tcp://127.0.0.1:{port}")
    shown: list[np.ndarray] = []

    def watch() -> None:
        with urllib.request.urlopen(preview.url, timeout=30) as stream:
            data = b""
            while len(shown) < 3:
                data += stream.read(4096)
                start, end = data.find(b"\xff\xd8"), data.find(b"\xff\xd9")
                if 0 <= start < end:
                    shown.append(cv2.cvtColor(cv2.imdecode(np.frombuffer(data[start:end + 2], np.uint8), 1),
                                              cv2.COLOR_BGR2RGB))
                    data = data[end + 2:]

    viewer = threading.Thread(target=watch, daemon=True)
    viewer.start()
    try:
        statuses: list[tuple[int, dict]] = []
        summary = protect_live(f"tcp://127.0.0.1:{port}?listen", None, ProtectOptions(), preview=preview,
                               status=lambda s: statuses.append((s.frames, dict(s.latency_ms))))
    finally:
        preview.close()
    thread.join(timeout=60)
    viewer.join(timeout=30)
    assert preview.url.startswith("http://127.0.0.1:") and len(shown) == 3 and shown[0].shape == (360, 640, 3)
    assert _covered(shown, every=1) == 0
    # The status line's figures, about once a second while it ran: frames so far and the latency.
    assert statuses and all(lat["p95"] >= lat["p50"] > 0 for _, lat in statuses)
    assert [n for n, _ in statuses] == sorted(n for n, _ in statuses) and statuses[-1][0] <= summary.frames


def _with_opus(clip, path):
    """`clip` as MPEG-TS with its sound re-encoded as Opus (a WebRTC gateway's or an OBS stream's)."""
    with av.open(str(clip)) as src, av.open(str(path), "w", format="mpegts") as out:
        video, audio = out.add_stream_from_template(src.streams.video[0]), out.add_stream("libopus", rate=48000)
        for packet in src.demux(src.streams.video[0], src.streams.audio[0]):
            if packet.stream.type == "video" and packet.size:
                packet.stream = video
                out.mux(packet)
            elif packet.stream.type == "audio":
                for frame in packet.decode():
                    frame.pts = None
                    out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def _starts_and_lengths(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        codec = a.codec_context.name
        starts = float(v.start_time * v.time_base), float(a.start_time * a.time_base)
        frames = list(c.decode(a))
        audio_s = sum(f.samples / f.sample_rate for f in frames)
    return codec, starts, audio_s


@pytest.mark.parametrize("opus, sink, codec", [(True, "out.flv", "aac"), (False, "out.webm", "opus")])
def test_sound_the_sink_cannot_take_is_reencoded_in_sync(clip, tmp_path, opus, sink, codec):
    """Opus is not sent over RTMP (FLV): it becomes AAC; AAC cannot go into WebM: it becomes Opus."""
    source = _with_opus(clip, tmp_path / "opus.ts") if opus else clip
    proc, sent = _live(["-o", tmp_path / sink, "-q"], clip=source)
    assert proc.returncode == 0, proc.stderr
    got, (video_start, audio_start), audio_s = _starts_and_lengths(tmp_path / sink)
    assert got == codec and abs(video_start - audio_start) < 0.1  # in sync
    assert abs(audio_s - sent["sent"] / 30) < 0.25  # the whole sound, not a part of it


def _wait_until_bound(port: int, timeout: float = 60) -> None:
    """Wait until something (veil) has bound UDP `port` on 127.0.0.1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on udp port {port}")


def test_a_udp_source_is_protected(clip, tmp_path):
    """MPEG-TS over UDP, as an IP camera or an encoder box sends it: nothing waits for the receiver."""
    port, out, report = _port(), tmp_path / "udp.mp4", tmp_path / "udp.json"
    proc = subprocess.Popen([*VEIL, "protect", f"udp://127.0.0.1:{port}", "-o", str(out), "--json", str(report),
                             "--stall-timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_bound(port)
    time.sleep(0.5)
    thread, sent = send_in_background(clip, f"udp://127.0.0.1:{port}?pkt_size=1316")
    thread.join(timeout=60)
    _, errors = proc.communicate(timeout=60)
    # UDP has no end: the source falls silent, and the run ends there (exit 1 says it stalled)
    assert proc.returncode == 1 and "ended early" in errors, errors
    summary = json.loads(report.read_text())["files"][0]
    assert sent == {"sent": 72} and summary["frames"] >= 60 and summary["faces"] >= 50
    with VideoReader(out) as reader:
        frames = [f.image for f in reader]
        assert reader.info.audio_streams == 1
    assert len(frames) == summary["frames"] and _covered(frames) == 0


def test_a_sink_that_goes_away_mid_stream_is_exit_1(clip):
    port = _port()

    def receive_a_little() -> None:
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(60)
            conn, _ = server.accept()
            conn.recv(20000)  # a few frames, then the viewer hangs up
            conn.close()

    receiver = threading.Thread(target=receive_a_little, daemon=True)
    receiver.start()
    proc, _ = _live(["-o", f"tcp://127.0.0.1:{port}", "-q"], {"hold_s": 2}, clip)
    receiver.join(timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "tcp://127.0.0.1" in lines[0], proc.stderr
