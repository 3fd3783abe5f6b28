"""face-api's 68-point face landmarks in PyTorch, and the expression geometry they measure.

The network is face-api's ``FaceLandmark68Net`` (``src/faceLandmarkNet/``): the same feature
extractor as its expression net (:class:`veil.models.expression.FaceFeatureNet`) with a linear
layer to 136 numbers, the (x, y) of the 68 iBUG 300-W points as fractions of the 112-px input.
face-api feeds it the detector's box, padded to a square about its centre and resized to 112 px
(``NetInput.toBatchTensor(112, true)``); :meth:`Landmark68Net.landmarks` does the same from a
frame and boxes, and :meth:`Landmark68Net.points` takes crops a caller made (veil's aligned crops)
and answers in their pixels.

:func:`expression_geometry` turns points into what an expression changes in a face's shape: mouth
opening and width, eyebrow height and eye opening, each divided by the distance between the eye
centres (so a face's size and position do not count). It takes numpy or torch points, so the same
numbers judge a protection (``bench/qmvae_table.py``) and steer QM-VAE (differentiable).

Usage::

    >>> net = Landmark68Net.pretrained()                                   # doctest: +SKIP
    >>> points = net.landmarks(frame_rgb, faces.boxes)      # (N, 68, 2) frame pixels  # doctest: +SKIP
    >>> expression_geometry(points)                         # (N, 4)       # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from veil.models.expression import FaceFeatureNet

__all__ = ["GEOMETRY", "Landmark68Net", "expression_geometry", "square_box"]

GEOMETRY = ("mouth_open", "mouth_width", "brow_height", "eye_open")
"""The columns of :func:`expression_geometry`, in order."""

# iBUG 300-W indices (0-based): brows 17-21 and 22-26, eyes 36-41 and 42-47, outer lips 48-59,
# inner lips 60-67.
_RIGHT_EYE, _LEFT_EYE = list(range(36, 42)), list(range(42, 48))
_BROWS = (list(range(17, 22)), list(range(22, 27)))
_MOUTH_OPEN = ((61, 67), (62, 66), (63, 65))  # inner lips, top against bottom
_EYE_OPEN = ((37, 41), (38, 40), (43, 47), (44, 46))  # lids, top against bottom


class Landmark68Net(FaceFeatureNet):
    """68 face landmarks.

    Shape:
        forward(crops): (B, 3, 112, 112) float RGB in 0..255 -> (B, 68, 2), x and y as fractions
            of the crop's side
    """

    @classmethod
    def pretrained(cls, manifest: Path | str | None = None) -> "Landmark68Net":
        """The network with face-api's weights, fetched into veil's cache on first use."""
        return cls.from_store("faceapi/face_landmark_68_model-weights_manifest.json",
                              "faceapi/face_landmark_68_model.bin", manifest)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.linear(crops).view(-1, 68, 2)

    @torch.no_grad()
    def points(self, crops: np.ndarray) -> np.ndarray:
        """Landmarks of square RGB crops, in the crops' pixels.

        Shape: crops (N, S, S, 3) uint8 -> (N, 68, 2) float32
        """
        if len(crops) == 0:
            return np.zeros((0, 68, 2), np.float32)
        side = crops.shape[1]
        if crops.shape[2] != side:
            raise ValueError(f"expected square crops, got {crops.shape[1]}x{crops.shape[2]}")
        if side != self.input_size:
            crops = np.stack([cv2.resize(c, (self.input_size,) * 2, interpolation=cv2.INTER_AREA
                                         if side > self.input_size else cv2.INTER_LINEAR) for c in crops])
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        return (self(x) * side).numpy().astype(np.float32)

    def landmarks(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Landmarks of the faces in `boxes` (a detector's), in frame pixels, as face-api finds them.

        Shape: frame (H, W, 3) uint8 RGB, boxes (N, 4) xyxy -> (N, 68, 2) float32
        """
        squares = [square_box(b) for b in np.asarray(boxes, np.float64).reshape(-1, 4)]
        crops = np.stack([_crop(frame, s, self.input_size) for s in squares]) if squares else \
            np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        points = self.points(crops)
        for i, (x1, y1, x2, _) in enumerate(squares):
            points[i] = points[i] * ((x2 - x1) / self.input_size) + np.array([x1, y1], np.float32)
        return points


def square_box(box: np.ndarray) -> tuple[float, float, float, float]:
    """The square about a box's centre whose side is the box's longer side (face-api's padding)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    half = max(x2 - x1, y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - half, cy - half, cx + half, cy + half


def _crop(frame: np.ndarray, square: tuple[float, float, float, float], size: int) -> np.ndarray:
    """`square` of `frame` resized to size x size; outside the frame is black, as face-api pads."""
    x1, y1, x2, _ = square
    scale = size / max(x2 - x1, 1e-6)
    matrix = np.array([[scale, 0, -x1 * scale], [0, scale, -y1 * scale]], np.float64)
    flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, matrix, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def expression_geometry(points):
    """What an expression does to a face's shape, in eye distances: mouth opening (inner lips),
    mouth width (corners), eyebrow height (brow points above the eye line's centre of their eye)
    and eye opening (lids), each the mean of its pairs.

    Shape: points (N, 68, 2) numpy or torch -> (N, 4) of the same kind, columns :data:`GEOMETRY`
    """
    lib = torch if isinstance(points, torch.Tensor) else np

    def dist(a, b):
        return lib.sqrt(((points[:, a] - points[:, b]) ** 2).sum(-1) + 1e-12)

    right, left = points[:, _RIGHT_EYE].mean(1), points[:, _LEFT_EYE].mean(1)
    eyes = lib.sqrt(((left - right) ** 2).sum(-1) + 1e-12)
    # The up direction is perpendicular to the eye line, so a tilted head measures the same.
    across = (left - right) / eyes[:, None]
    up = lib.stack([across[:, 1], -across[:, 0]], -1)
    brow = [((points[:, idx] - eye[:, None]) * up[:, None]).sum(-1).mean(1)
            for eye, idx in ((right, _BROWS[0]), (left, _BROWS[1]))]
    mouth_open = sum(dist(a, b) for a, b in _MOUTH_OPEN) / len(_MOUTH_OPEN)
    eye_open = sum(dist(a, b) for a, b in _EYE_OPEN) / len(_EYE_OPEN)
    columns = [mouth_open, dist(48, 54), (brow[0] + brow[1]) / 2, eye_open]
    return lib.stack([c / eyes for c in columns], -1)
