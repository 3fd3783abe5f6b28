"""Alignment: the mean-face template, the similarity fit, OpenCV and torch crops, pasting back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.align import (
    RECOGNIZER_CROP,
    AlignCrop,
    CropSpec,
    align_crop,
    alignment_matrices,
    crop_faces,
    invert_affine,
    paste_crop,
    paste_faces,
    similarity_transform,
    similarity_transform_torch,
    template_points,
)


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _smooth_image(h: int = 120, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(x / 9.0), 128 + 100 * np.cos(y / 11.0), 60 + x + 0 * y], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_template_is_dlibs_mean_face_with_padding() -> None:
    t = template_points(RECOGNIZER_CROP)
    # nose tip of dlib's mean face (0.490127, 0.515625), padding 0.25, 150 px
    np.testing.assert_allclose(t[2], [(0.25 + 0.490127) / 1.5 * 150, (0.25 + 0.515625) / 1.5 * 150])
    assert t[0, 0] < t[2, 0] < t[1, 0] and t[0, 1] < t[2, 1] < t[3, 1]
    # padding 0 puts the mean face's extent on the crop's border
    np.testing.assert_allclose(template_points(CropSpec(100, 0.0)), 100 * template_points(CropSpec(1, 0.0)))


@pytest.mark.parametrize("angle,scale,tx,ty", [(0.0, 1.0, 0.0, 0.0), (0.3, 2.5, -40.0, 12.0), (-1.2, 0.4, 5.0, 300.0)])
def test_similarity_fit_recovers_exact_transform(angle: float, scale: float, tx: float, ty: float) -> None:
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = _similarity(angle, scale, tx, ty)
    np.testing.assert_allclose(similarity_transform(src, _apply(m, src)), m, atol=1e-9)
    got = similarity_transform_torch(torch.from_numpy(src)[None], torch.from_numpy(_apply(m, src)))
    np.testing.assert_allclose(got[0].numpy(), m, atol=1e-9)


def test_similarity_fit_is_least_squares_under_noise() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    dst = _apply(_similarity(0.2, 1.3, 3, 4), src) + rng.normal(0, 1.0, (5, 2))
    m = similarity_transform(src, dst)
    best = ((_apply(m, src) - dst) ** 2).sum()
    for d in np.eye(6) * 1e-3:  # any nudge of (a, b, tx, ty) costs more
        a, b = m[0, 0] + d[0], m[1, 0] + d[1]
        m2 = np.array([[a, -b, m[0, 2] + d[2]], [b, a, m[1, 2] + d[3]]])
        assert ((_apply(m2, src) - dst) ** 2).sum() >= best - 1e-9


def test_crop_at_template_landmarks_is_the_top_left_corner() -> None:
    img = _smooth_image()
    lm = template_points(RECOGNIZER_CROP)[None]  # identity transform
    crop = crop_faces(img, lm, RECOGNIZER_CROP)
    assert crop.shape == (1, 150, 150, 3)
    np.testing.assert_array_equal(crop[0, :120, :150], img[:, :150])
    assert crop[0, 120:].max() == 0  # outside the frame is black


def test_crop_of_empty_faces_is_empty() -> None:
    assert crop_faces(_smooth_image(), np.zeros((0, 5, 2)), RECOGNIZER_CROP).shape == (0, 150, 150, 3)


def test_torch_crop_matches_opencv() -> None:
    img = _smooth_image()
    lm = _apply(_similarity(0.25, 0.5, 30, 20), template_points(RECOGNIZER_CROP))[None]
    cv = crop_faces(img, lm, RECOGNIZER_CROP)[0].astype(np.float64)
    t = align_crop(torch.from_numpy(img).permute(2, 0, 1).double(), torch.from_numpy(lm), RECOGNIZER_CROP)
    diff = np.abs(t[0].permute(1, 2, 0).numpy() - cv)
    assert diff.max() <= 3.0 and diff.mean() < 0.6  # OpenCV interpolates in 1/32 pixel steps


def test_module_equals_function() -> None:
    img = torch.rand(3, 40, 50, dtype=torch.float64)
    lm = torch.tensor([[[15.0, 15], [30, 15], [22, 24], [16, 32], [29, 32]]], dtype=torch.float64)
    spec = CropSpec(24, 0.25)
    torch.testing.assert_close(AlignCrop(spec)(img, lm), align_crop(img, lm, spec))


def test_downscaling_crop_does_not_alias() -> None:
    # a 1-pixel checkerboard shrunk 8x must come out flat grey, not moire
    board = ((np.indices((800, 800)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, -1)
    lm = _apply(_similarity(0.0, 8.0, 0, 0), template_points(RECOGNIZER_CROP))[None]
    crop = crop_faces(img, lm, RECOGNIZER_CROP)[0, 10:90, 10:90].astype(np.float64)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 6


def test_paste_back_of_unmodified_crop_is_near_identity() -> None:
    img = _smooth_image()
    lm = _apply(_similarity(0.1, 1.4, -60, -70), template_points(RECOGNIZER_CROP))[None]
    crop = crop_faces(img, lm, RECOGNIZER_CROP)
    back = paste_faces(img, crop, lm, RECOGNIZER_CROP)
    # the crop overhangs the frame's top-left; its first pixel row mixed in black from outside
    err = np.abs(back.astype(int) - img)[2:-2, 2:-2]
    assert err.mean() < 0.5 and np.percentile(err, 99) <= 4


def test_paste_changes_only_the_footprint() -> None:
    img = _smooth_image()
    lm = _apply(_similarity(0.3, 0.3, 40, 30), template_points(RECOGNIZER_CROP))[None]
    red = np.zeros((1, 150, 150, 3), np.uint8)
    red[..., 0] = 255
    out = paste_faces(img, red, lm, RECOGNIZER_CROP)
    m = alignment_matrices(lm, RECOGNIZER_CROP)[0]
    inv = invert_affine(m)
    centre = np.rint(inv @ np.array([75.0, 75.0, 1.0])).astype(int)
    np.testing.assert_array_equal(out[centre[1], centre[0]], [255, 0, 0])
    ys, xs = np.mgrid[0:120, 0:160]
    u, v = (np.stack([xs, ys, np.ones_like(xs)], -1) @ m.T).transpose(2, 0, 1)
    outside = (u < -1) | (u > 150) | (v < -1) | (v > 150)
    np.testing.assert_array_equal(out[outside], img[outside])
    tout = paste_crop(torch.from_numpy(img).permute(2, 0, 1).double(),
                      torch.from_numpy(red).permute(0, 3, 1, 2).double(), torch.from_numpy(lm), RECOGNIZER_CROP)
    diff = np.abs(tout.permute(1, 2, 0).numpy() - out)
    assert diff.max() <= 4.0 and diff.mean() < 0.05  # OpenCV's 1/32-pixel steps, uint8 rounding


def test_paste_mask_weights_the_blend() -> None:
    img = np.full((60, 60, 3), 100, np.uint8)
    spec = CropSpec(20, 0.0)
    lm = template_points(spec)[None] + 10
    white = np.full((1, 20, 20, 3), 200, np.uint8)
    out = paste_faces(img, white, lm, spec, mask=np.full((20, 20), 0.25, np.float32))
    np.testing.assert_array_equal(out[20, 20], [125, 125, 125])


def test_gradcheck_crop_wrt_frame_and_landmarks() -> None:
    spec = CropSpec(5, 0.25)
    frame = torch.rand(2, 10, 11, dtype=torch.float64, requires_grad=True)
    lm = (torch.from_numpy(template_points(spec)) * 1.1 + 2.3)[None].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, p: align_crop(f, p, spec), (frame, lm), eps=1e-6, atol=1e-5)


def test_gradcheck_paste_wrt_frame_and_crop() -> None:
    spec = CropSpec(4, 0.25)
    frame = torch.rand(2, 9, 9, dtype=torch.float64, requires_grad=True)
    crops = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    lm = (torch.from_numpy(template_points(spec)) * 1.3 + 2.1)[None]
    assert torch.autograd.gradcheck(lambda f, c: paste_crop(f, c, lm, spec), (frame, crops), eps=1e-6, atol=1e-5)
