"""The shipped F2F and V2V models end to end on a real clip the models never saw in training."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from veil.models.store import fetch
from veil.stream.checkpoint import default_checkpoint, load_checkpoint
from veil.stream.codec import AudioOverride, decode_stream, encode_stream
from veil.stream.entropy import decode_indices
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
    buf = io.BytesIO()
    stats = encode_stream(path, buf, ckpt, max_frames=FRAMES)
    data = buf.getvalue()
    assert stats.frames == FRAMES and StreamReader(io.BytesIO(data)).header.kind == kind

    def decode(override: AudioOverride | None) -> np.ndarray:
        got: list[np.ndarray] = []
        decode_stream(io.BytesIO(data), None, on_frames=got.append, audio_override=override)
        return np.concatenate(got)

    right = decode(None)
    assert right.shape == frames.shape
    assert psnr(right, frames) >= floor_db
    # Without the clip's audio the receiver decodes noise (the audio keys the code alphabet).
    assert psnr(decode(AudioOverride(None, [])), frames) <= 12.0
    # The coded video is smaller than the raw frames by a wide margin.
    assert stats.code_bytes < frames.nbytes / 30
    # What travels has no spatial layout: neighbouring cells agree no more often than two cells
    # drawn at random from the chunk's codes (a code map in grid order agrees far more: smooth areas).
    for rec in (r for r in StreamReader(io.BytesIO(data)) if isinstance(r, ChunkRecord)):
        sent = decode_indices(rec.data)[..., 0]
        p = np.bincount(sent.ravel()) / sent.size
        chance = float((p ** 2).sum())
        assert float(np.mean(sent[:, :, 1:] == sent[:, :, :-1])) < 1.2 * chance + 0.005
