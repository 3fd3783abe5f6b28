"""What a protection hides: faces still found, identities still matched.

- :func:`matches_after` says, for each face of the original, whether a detector still finds a
  face at the same place in the protected frame (IoU of the boxes >= ``iou_threshold``).
  :func:`detect_around` runs the detector only on a square region around each original face
  (twice the face, resized to 256 px): it asks about that face alone, at a quarter of the cost
  of a 640x360 frame.
- The recognizers and their descriptors come from :mod:`veil.models.identity`;
  :func:`get_expression_model` wraps the expression classifier the same way.
- :func:`reidentified` compares a protected face's descriptor to the original face's: the
  protection failed for that face when the distance is under the recognizer's threshold.

The protected face is cropped at the *original's* landmarks: the attacker is granted a perfect
alignment, the strongest case, and a face that no detector finds any more is still judged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from veil.align import EXPRESSION_CROP
from veil.detect.track import iou_matrix
from veil.models.identity import IdentityModel

__all__ = ["get_expression_model", "matches_after", "face_regions", "detect_around", "reidentified"]


@lru_cache(maxsize=None)
def get_expression_model() -> IdentityModel:
    """The expression classifier, wrapped like a recognizer (its output: 7 probabilities)."""
    from veil.models.expression import ExpressionNet

    return IdentityModel("expression", ExpressionNet.pretrained(), EXPRESSION_CROP, float("nan"))


def matches_after(original_boxes: np.ndarray, detected_boxes: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """For each original face, whether a detection in the protected frame overlaps it.

    Shape:
        original_boxes: (N, 4), detected_boxes: (M, 4) -> (N,) bool
    """
    if len(original_boxes) == 0 or len(detected_boxes) == 0:
        return np.zeros(len(original_boxes), bool)
    return iou_matrix(original_boxes, detected_boxes).max(axis=1) >= iou_threshold


def face_regions(boxes: np.ndarray, context: float = 2.0) -> np.ndarray:
    """Square regions centred on the faces, ``context`` times the longer side of each box.

    Shape:
        boxes: (N, 4) xyxy -> (N, 3) (x0, y0, side)
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    side = context * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([cx - side / 2, cy - side / 2, np.maximum(side, 1.0)], axis=1)


def detect_around(detector: object, frames: list[np.ndarray], boxes: list[np.ndarray], size: int = 256,
                  context: float = 2.0) -> list[list[np.ndarray]]:
    """Detections near each face: for frame i and face j, the boxes found in its region.

    Regions reaching past the frame are padded with black. Boxes come back in frame coordinates.

    Shape:
        frames: list of (H, W, 3) uint8, boxes: list of (N_i, 4) -> [[(M_ij, 4) per face] per frame]
    """
    import cv2

    crops, where = [], []
    for i, (frame, b) in enumerate(zip(frames, boxes)):
        for j, (x0, y0, side) in enumerate(face_regions(b, context)):
            s = size / side
            m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
            crops.append(cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR))
            where.append((i, j, x0, y0, s))
    out: list[list[np.ndarray]] = [[np.zeros((0, 4), np.float32)] * len(b) for b in boxes]
    found = detector.detect_batch(crops) if crops else []  # type: ignore[attr-defined]
    for (i, j, x0, y0, s), faces in zip(where, found):
        out[i][j] = (faces.boxes / s + np.array([x0, y0, x0, y0])).astype(np.float32)
    return out


def reidentified(original: np.ndarray, protected: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor distances and whether each protected face still matches its original.

    Shape:
        original, protected: (N, D) -> distances (N,), matched (N,) bool
    """
    if len(original) == 0:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    dist = np.linalg.norm(original - protected, axis=-1)
    return dist.astype(np.float32), dist < threshold
