"""Fixtures for the codec tests: a small generated clip with a tone, and a tiny codec model."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from veil.stream.checkpoint import Checkpoint, save_checkpoint
from veil.stream.model import CodecConfig, CodecModel
from veil.stream.train import load_clip

TINY = dict(widths=(8, 16), code_dim=8, codebook_size=32, num_quantizers=2, n_mels=16, audio_dim=8)


def moving_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth background and a bright square moving right. Shape: (n, H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 96)], -1).astype(np.uint8)
    frames = np.repeat(base[None], n, 0)
    for i in range(n):
        x0 = 4 + 3 * i % (width - 16)
        frames[i, 16:32, x0:x0 + 12] = rng.integers(180, 255, 3, dtype=np.uint8)
    return frames


def write_clip(path: Path, frames: np.ndarray, fps: int = 12, tone_hz: float | None = 440.0) -> Path:
    """Write frames (lossless H.264) and an AAC tone to a streamable Matroska file."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
    v.options = {"qp": "0", "preset": "ultrafast"}
    a = None
    if tone_hz is not None:
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24")
        vf.pts = i
        out.mux(v.encode(vf))
    if a is not None:
        rate, total = 48000, int(48000 * len(frames) / fps)
        t = np.arange(total) / rate
        pcm = (0.3 * np.sin(2 * np.pi * tone_hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for k, start in enumerate(range(0, total, 1024)):
            af = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, start
            out.mux(a.encode(af))
        out.mux(a.encode(None))
    out.mux(v.encode(None))
    out.close()
    return path


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "tone.mkv", moving_frames(20))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, clip_path: Path) -> Path:
    """A tiny F2F model whose codebooks were initialised (k-means) on the generated clip."""
    torch.manual_seed(0)
    model = CodecModel(CodecConfig(kind="f2f", scramble_seed=1234, **TINY))
    frames, feats, _ = load_clip(clip_path, TINY["n_mels"])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[:, None] / 255.0
    model.train()
    model(x, torch.from_numpy(feats)[:, None])
    model.eval()
    return save_checkpoint(Checkpoint(model), tmp_path_factory.mktemp("ckpt") / "tiny-f2f.pt")


@pytest.fixture(scope="session")
def tiny() -> dict:
    """Keyword arguments of `CodecConfig` for a tiny model."""
    return dict(TINY)


@pytest.fixture(scope="session")
def fps() -> Fraction:
    return Fraction(12)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP spinning (30x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
