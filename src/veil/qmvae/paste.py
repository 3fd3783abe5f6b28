"""How QM-VAE's faces are put into the frame: the feathered ellipse they are pasted under, the
decoder's faces for code maps, and the differentiable rendering of a pasted face in another crop
(what a service or a recognizer sees of the protected frame), which the code search scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from veil.align import CropSpec, crop_faces

if TYPE_CHECKING:
    from veil.qmvae.model import QMVAE

__all__ = ["soft_ellipse", "draw", "inside_frame", "renderer"]


def soft_ellipse(size: int, radius: float = 0.47, feather: float = 0.08) -> np.ndarray:
    """A feathered ellipse mask over the crop's face (1 inside, fading to 0 over ``feather``).

    ``radius`` and ``feather`` are fractions of the crop size; the ellipse is centred slightly
    below the crop's centre, where the aligned face's centre sits, and is 10% taller than wide.

    Shape:
        -> (size, size) float32 in 0..1
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = size / 2, size * 0.53
    r = np.sqrt(((xx - cx) / (radius * size)) ** 2 + ((yy - cy) / (1.1 * radius * size)) ** 2)
    edge = max(feather / radius, 1e-6)
    mask = np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), max(0.5, feather * size / 4))


def draw(model: QMVAE, indices) -> np.ndarray:  # noqa: ANN001 - a torch tensor
    """The decoder's faces for code maps. Shape: (N, s, s) long -> (N, S, S, 3) uint8"""
    import torch

    with torch.no_grad():
        faces = model.decode(indices)
    return np.clip(np.rint(faces.permute(0, 2, 3, 1).numpy() * 255.0), 0, 255).astype(np.uint8)


def inside_frame(frame: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """1 where each face's ``spec`` crop lies in the frame (where a pasted face shows), 0 outside.

    Shape: -> (N, spec.size, spec.size) float in 0..1
    """
    return crop_faces(np.full_like(frame, 255), landmarks, spec)[..., 0] / 255.0


def renderer(own_crops: np.ndarray, inside: np.ndarray, mask: np.ndarray,  # noqa: ANN202 - torch closures
              source: CropSpec, target: CropSpec):
    """How a generated face shows in another crop once pasted: resampled from ``source`` (the
    model's crop) to ``target``, under the paste ``mask`` where the crop lies in the frame, the
    original frame (``own_crops``, cut in ``target``) around it.

    Shape: own_crops (N, T, T, 3) uint8, inside (N, T, T), mask (S, S) -> (own (N, 3, T, T) 0..1,
        shown(faces (B', 3, S, S) 0..1, face (B',) long) -> (B', 3, T, T) 0..1)
    """
    import torch

    from veil.qmvae.model import composite, crop_to_spec

    own = torch.from_numpy(np.ascontiguousarray(own_crops)).permute(0, 3, 1, 2).float() / 255.0
    paste = crop_to_spec(torch.from_numpy(mask)[None, None], source, target)[:, 0]
    paste = (paste * torch.from_numpy(np.ascontiguousarray(inside, np.float32)))[:, None]  # (N, 1, T, T)

    def shown(faces: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return composite(crop_to_spec(faces, source, target), own[face], paste[face])

    return own, shown
