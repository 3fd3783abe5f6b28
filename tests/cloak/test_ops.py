"""The cloak's pure parts: DSSIM (against scikit-image), gradients through alignment + SSIM,
the key-point affine and the warp that carries a cloak to the next frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from veil.align import CropSpec, align_crop
from veil.cloak.ops import (Region, dssim, face_motion, keypoint_affine, keypoint_motion, landmark_jump, region_grey,
                            region_warp, soft_mask, warp_cloak)
from veil.cloak.targets import TargetBank, choose_target


def _smooth_image(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


@pytest.mark.parametrize("noise", [1.0, 4.0, 20.0])
def test_dssim_matches_scikit_image(noise: float) -> None:
    from skimage.metrics import structural_similarity

    a = _smooth_image(0)
    b = np.clip(a + np.random.default_rng(1).normal(0, noise, a.shape), 0, 255).astype(np.float32)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                channel_axis=-1, data_range=255.0)
    ours = dssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None])
    assert float(ours[0]) == pytest.approx((1 - ref) / 2, abs=2e-6)


def test_dssim_identical_is_zero() -> None:
    a = torch.from_numpy(_smooth_image(2)).permute(2, 0, 1)[None]
    assert float(dssim(a, a)[0]) == pytest.approx(0.0, abs=1e-6)


def test_gradcheck_alignment_and_ssim_float64() -> None:
    """Gradients of DSSIM(crop(x + delta), crop(x)) w.r.t. the cloak and the key points."""
    spec = CropSpec(16, 0.25)
    frame = torch.from_numpy(_smooth_image(3, 24, 24)).permute(2, 0, 1).double()
    lm = torch.tensor([[[8.0, 9.0], [16.0, 9.5], [12.0, 13.0], [9.0, 17.0], [15.0, 17.5]]], dtype=torch.float64)
    delta = (torch.rand(3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 8 - 4)

    def f(d: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return dssim(align_crop(frame + d, points, spec), align_crop(frame, lm, spec))

    assert torch.autograd.gradcheck(f, (delta.requires_grad_(True), lm.clone().requires_grad_(True)),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_keypoint_affine_recovers_a_known_transform() -> None:
    true = np.array([[0.9, -0.2, 12.0], [0.25, 1.1, -7.0]])
    src = np.array([[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [35.0, 80.0], [66.0, 79.0]])
    dst = src @ true[:, :2].T + true[:, 2]
    np.testing.assert_allclose(keypoint_affine(src, dst), true, atol=1e-9)
    assert landmark_jump(src, dst) == pytest.approx(abs(np.log(np.linalg.det(true[:, :2]))) / 2, abs=1e-9)


def test_landmark_jump_flags_points_no_affine_explains() -> None:
    src = np.array([[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [35.0, 80.0], [66.0, 79.0]])
    assert landmark_jump(src, src + 3.0) < 1e-9
    assert landmark_jump(src, src[[4, 2, 0, 1, 3]]) > 0.3
    assert landmark_jump(src, src[[1, 0, 2, 4, 3]]) == float("inf")  # left and right swapped: a mirror


def test_warp_cloak_moves_pixels_by_a_known_transform() -> None:
    cloak = np.zeros((20, 30, 3), np.float32)
    cloak[5, 7] = [1.0, 2.0, 3.0]
    cloak[12, 20] = [-4.0, 0.5, 9.0]
    shift = np.array([[1.0, 0.0, 4.0], [0.0, 1.0, -2.0]])
    out = warp_cloak(cloak, shift, (20, 30))
    np.testing.assert_allclose(out[3, 11], [1.0, 2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(out[10, 24], [-4.0, 0.5, 9.0], atol=1e-6)
    assert np.count_nonzero(np.abs(out).sum(-1) > 1e-6) == 2
    # a 90-degree rotation about the origin then a shift: (x, y) -> (-y + 25, x)
    rot = np.array([[0.0, -1.0, 25.0], [1.0, 0.0, 0.0]])
    out = warp_cloak(cloak, rot, (40, 40))
    np.testing.assert_allclose(out[7, 20], [1.0, 2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(out[20, 13], [-4.0, 0.5, 9.0], atol=1e-6)


def test_face_motion_follows_the_pixels_where_the_key_points_jitter(load_rgb) -> None:
    """A real face moved by (2.6, -1.4) px: key points off by up to 4 px (a detector's jitter) give
    a move 1.5 px wrong; the pixels give the right one to a fifth of a pixel (measured: 0.16)."""
    image = load_rgb("obama.jpg")
    true = np.array([[1.0, 0.0, 2.6], [0.0, 1.0, -1.4]])
    moved = cv2.warpAffine(image, true, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    region = Region(300, 150, 600, 450, (0, 0, 300, 300))
    src = np.array([[400.0, 250], [500, 250], [450, 300], [410, 350], [490, 350]])
    jitter = np.array([[3.0, -2], [-1, 1], [2, -3], [1, -2], [2.5, 1]])
    dst = src + true[:, 2] + jitter
    assert np.abs(keypoint_motion(src, dst)[:, 2] - true[:, 2]).max() > 1.0  # the key points are off
    motion = face_motion(src, dst, region_grey(image, region), region_grey(moved, region), region)
    np.testing.assert_allclose(motion, true, atol=0.2)


def test_face_motion_keeps_the_key_points_where_the_pixels_say_nothing() -> None:
    flat = np.full((64, 64), 128.0, np.float32)
    region = Region(0, 0, 64, 64, (0, 0, 64, 64))
    src = np.array([[20.0, 20], [40, 20], [30, 30], [22, 40], [38, 40]])
    np.testing.assert_allclose(face_motion(src, src + 3.0, flat, flat, region), keypoint_motion(src, src + 3.0))


def test_region_warp_composes_frame_affine_with_region_origins() -> None:
    """A pixel of the old region lands where the frame-to-frame affine takes its frame position."""
    old, new = Region(100, 50, 140, 90, (0, 0, 40, 40)), Region(90, 60, 140, 110, (0, 0, 50, 50))
    affine = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, 15.0]])  # the face moved by (-3, +15)
    cloak = np.zeros((40, 40, 3), np.float32)
    cloak[10, 20] = 5.0  # frame (120, 60) -> (117, 75) -> new region (27, 15)
    out = warp_cloak(cloak, region_warp(affine, old, new), new.shape)
    np.testing.assert_allclose(out[15, 27], 5.0, atol=1e-6)


def test_soft_mask_is_one_inside_and_zero_outside_the_face() -> None:
    mask = soft_mask(Region(0, 0, 60, 80, (10, 10, 50, 70)))
    assert mask.shape == (80, 60)
    assert mask[40, 30] == pytest.approx(1.0)
    assert mask[2, 2] == 0.0 and mask[78, 58] == 0.0
    assert 0.0 < mask[40, 11] < 1.0  # the feathered edge


def test_choose_target_is_the_farthest_other_person() -> None:
    bank = TargetBank(np.array([[0.1, 0.0], [0.9, 0.0], [0.0, 1.4], [3.0, 0.0]], np.float32), ("a", "b", "c", "d"))
    one = {"r": np.zeros(2, np.float32)}
    assert choose_target(one, {"r": bank}, {"r": 0.6}) == 3
    near = TargetBank(bank.descriptors[:1], ("a",))
    with pytest.raises(Exception, match="target bank"):
        choose_target(one, {"r": near}, {"r": 0.6})


def test_choose_target_is_far_in_every_recognizer_at_once() -> None:
    """d is farthest for r but within s's threshold (the person, to s): c, far for both, is taken."""
    r = TargetBank(np.array([[0.1, 0.0], [0.9, 0.0], [0.0, 1.4], [3.0, 0.0]], np.float32), ("a", "b", "c", "d"))
    s = TargetBank(np.array([[5.0], [0.8], [3.0], [0.5]], np.float32), ("a", "b", "c", "d"))
    person = {"r": np.zeros(2, np.float32), "s": np.zeros(1, np.float32)}
    assert choose_target(person, {"r": r, "s": s}, {"r": 0.6, "s": 1.0}) == 2
