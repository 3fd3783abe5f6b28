"""The shipped F2F and V2V models end to end on a real clip the models never saw in training."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from veil.models.store import fetch
from veil.stream.checkpoint import default_checkpoint, load_checkpoint
from veil.stream.codec import AudioOverride, decode_stream, encode_stream
from veil.stream.format import ChunkRecord, StreamReader
from veil.stream.train import DEFAULT_VIDEOS, HELD_OUT, load_clip

FRAMES = 16


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def real_clip():
    path = fetch(HELD_OUT)
    assert HELD_OUT not in DEFAULT_VIDEOS
    return path, load_clip(path, 1, FRAMES)[0]


@pytest.mark.parametrize(("kind", "floor_db"), [("f2f", 28.0), ("v2v", 27.0)])
def test_shipped_model_codes_a_real_clip(kind: str, floor_db: float, real_clip) -> None:
    path, frames = real_clip
    ckpt = load_checkpoint(default_checkpoint(kind))
    buf, sent_codes = io.BytesIO(), []
    stats = encode_stream(path, buf, ckpt, max_frames=FRAMES, on_codes=sent_codes.append)
    data = buf.getvalue()
    assert stats.frames == FRAMES and StreamReader(io.BytesIO(data)).header.kind == kind

    def decode(override: AudioOverride | None, codes: list | None = None) -> np.ndarray:
        got: list[np.ndarray] = []
        decode_stream(io.BytesIO(data), None, on_frames=got.append, audio_override=override,
                      on_codes=None if codes is None else codes.append)
        return np.concatenate(got)

    got_codes: list[np.ndarray] = []
    right = decode(None, got_codes)
    assert right.shape == frames.shape
    assert psnr(right, frames) >= floor_db
    np.testing.assert_array_equal(np.concatenate(got_codes), np.concatenate(sent_codes))  # the coder is lossless
    # Without the clip's audio the key stream is wrong, and what the receiver decodes is noise.
    assert psnr(decode(AudioOverride(None, [])), frames) <= 12.0
    # The coded video is smaller than the raw frames by a wide margin.
    assert stats.code_bytes < frames.nbytes / 200  # 16 frames: the keyframe weighs in
    # What travels is uniformly random bytes, whatever the scene.
    sent = b"".join(r.data for r in StreamReader(io.BytesIO(data)) if isinstance(r, ChunkRecord))
    assert chisquare(np.bincount(np.frombuffer(sent, np.uint8), minlength=256)).pvalue > 1e-4
