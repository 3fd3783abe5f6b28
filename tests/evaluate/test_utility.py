"""Utility metrics: SSIM against scikit-image, PSNR by hand, masks, flicker."""

from __future__ import annotations

import numpy as np
import pytest

from veil.evaluate.utility import (
    PSNR_CAP,
    face_mask,
    flicker_ratio,
    frame_quality,
    psnr_from_mse,
    ssim_map,
    temporal_change,
)


def test_ssim_matches_scikit_image(clip_frames: list[np.ndarray]) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    a = clip_frames[0]
    rng = np.random.default_rng(0)
    for b in (clip_frames[3], np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)):
        ref = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255)
        mine = float(ssim_map(a, b)[5:-5, 5:-5].mean())
        assert abs(mine - ref) < 1e-4


def test_psnr_by_hand() -> None:
    assert psnr_from_mse(0.0) == PSNR_CAP
    assert psnr_from_mse(255.0**2) == pytest.approx(0.0)
    assert psnr_from_mse(65.025) == pytest.approx(30.0, abs=1e-4)  # 255^2 / 10^3


def test_quality_inside_and_outside_the_mask() -> None:
    a = np.full((60, 80, 3), 100, np.uint8)
    b = a.copy()
    b[20:40, 30:50] = 200  # change only inside the face box
    mask = face_mask((60, 80), np.array([[30, 20, 50, 40]]), mask_scale=1.0)
    assert mask.sum() == 400
    q = frame_quality(a, b, mask)
    assert q.psnr_outside_faces == PSNR_CAP and q.ssim_outside_faces == pytest.approx(1.0, abs=1e-6)
    assert q.mse == pytest.approx(100.0**2 * 400 / (60 * 80))
    assert q.psnr == pytest.approx(10 * np.log10(255.0**2 / q.mse))
    assert q.ssim < 0.95


def test_face_mask_grows_and_clips() -> None:
    m = face_mask((50, 50), np.array([[40, 40, 60, 60]]), mask_scale=2.0)  # grows to 30..70, clipped
    assert m[30:50, 30:50].all() and m.sum() == 400
    assert face_mask((10, 10), np.zeros((0, 4))).sum() == 0


def test_temporal_change_and_flicker() -> None:
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    b[0:10, 0:10] = 40
    assert temporal_change(a, b, np.array([0, 0, 10, 10])) == 40.0
    assert temporal_change(a, b, np.array([0, 0, 20, 20])) == 10.0
    assert flicker_ratio(3.0, 3.0) == 1.0 and flicker_ratio(9.0, 0.0) == 10.0
