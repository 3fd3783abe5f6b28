"""Generated test clips: textured moving frames, lossless RGB video, sine-tone audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["synthetic_frames", "write_clip"]


def synthetic_frames(n: int, width: int = 96, height: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Frames with texture and motion (no faces), different from one another."""
    import cv2

    rng = np.random.default_rng(seed)
    # Smooth texture (blurred noise): it moves visibly, and lossy codecs keep it within a few levels.
    base = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    return [np.roll(base, shift=3 * i, axis=1) for i in range(n)]


def write_clip(path: Path, frames: list[np.ndarray], *, pts: list[int] | None = None,
               time_base: Fraction = Fraction(1, 1000), fps: Fraction = Fraction(25), tone_hz: float | None = None,
               codec: str = "ffv1", pix_fmt: str = "bgr0", metadata: dict | None = None,
               rotation: int | None = None, audio_codec: str = "aac") -> Path:
    """Write a test clip: lossless RGB video (ffv1/bgr0) by default, optional sine-tone audio (AAC)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        if metadata:
            out.metadata.update(metadata)
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.codec_context.time_base = time_base
        vs.time_base = time_base
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = None
        if tone_hz is not None:
            rate = 48000 if audio_codec == "libopus" else 44100
            aus = out.add_stream(audio_codec, rate=rate)
            aus.layout = "mono"
        if pts is None:
            pts = [round(i / (fps * time_base)) for i in range(len(frames))]
        for image, p in zip(frames, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if aus is not None:
            seconds = float(pts[-1] * time_base) + 0.5
            t = np.arange(int(rate * seconds)) / rate
            samples = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            for i in range(0, len(samples), 1024):
                chunk = samples[i:i + 1024][None, :]
                af = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                af.sample_rate, af.pts = rate, i
                for packet in aus.encode(af):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return path
