"""The detector protocol, the detector registry, and helpers shared by detectors.

A detector turns RGB frames into `Faces`. Adding one is one file with `@register_detector("name")`;
the CLI's `--detector` choices come from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from veil.errors import InputError
from veil.faces import Faces

__all__ = ["DETECT_SIZE", "Detector", "register_detector", "get_detector", "detector_names", "nms", "fit_size"]

# The longest side, in pixels, of the frame a detector sees unless told otherwise: video up to
# 1080p is seen whole. Seen smaller, the faces of a wide shot vanish: on a 1080p shot whose faces
# are about 26 pixels wide, CenterFace at 640 pixels finds half of them and MTCNN (20-pixel
# smallest face) fewer (`python bench/protect_speed.py`, the detect-size table).
DETECT_SIZE = 1920


@runtime_checkable
class Detector(Protocol):
    """Finds faces with five landmarks in RGB frames."""

    name: str

    def detect(self, image: np.ndarray) -> Faces:
        """Faces in one (H, W, 3) uint8 RGB frame, in its pixel coordinates."""
        ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Faces]:
        """Faces in several frames of the same size (faster than one by one)."""
        ...


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Class decorator: make a detector available as ``--detector name``."""

    def wrap(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        if name in _REGISTRY:
            raise ValueError(f"detector {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def detector_names() -> list[str]:
    return sorted(_REGISTRY)


def get_detector(name: str, **options: object) -> Detector:
    """A detector by registry name, built with its options (e.g. ``threshold``, ``detect_size``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown detector {name!r}; choose one of: {', '.join(detector_names())}") from None
    return factory(**options)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    ``mode="min"`` divides the overlap by the smaller box (MTCNN's last stage), which removes a
    box nested inside another.

    Shape:
        - boxes: (N, 4) xyxy; scores: (N,); returns (K,) int64
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        denom = np.minimum(areas[i], areas[rest]) if mode == "min" else areas[i] + areas[rest] - inter
        overlap = inter / np.maximum(denom, 1e-9)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, np.int64)


def fit_size(width: int, height: int, detect_size: int | None, multiple: int = 1) -> tuple[int, int, float]:
    """The size a frame is resized to for detection: longest side `detect_size` (never upscaled),
    aspect kept, sides rounded up to `multiple`. Returns (width, height, scale)."""
    scale = 1.0 if not detect_size else min(1.0, detect_size / max(width, height))
    w = max(multiple, int(np.ceil(width * scale / multiple)) * multiple)
    h = max(multiple, int(np.ceil(height * scale / multiple)) * multiple)
    return w, h, scale


def shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` scaled by `scale` <= 1 with an area filter, as a detector should see it.

    OpenCV's area filter is fast for whole factors only (a fifth of the time at 1/2 as at 1/2.5):
    the image is first averaged down by the whole factor k = floor(1 / scale), cut to a multiple
    of k (less than one pixel of the result is lost at the right and bottom), then the remaining
    factor, between 1/2 and 1, is taken bilinearly, where no detail can alias.

    Shape: (H, W, 3) -> (round(H' * scale'), ...) with H' the height cut to a multiple of k.
    """
    h, w = image.shape[:2]
    k = max(1, int(1.0 / scale + 1e-9))
    if k > 1 and h >= k and w >= k:
        image = cv2.resize(image[:h - h % k, :w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        scale *= k
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if (sw, sh) == image.shape[1::-1]:
        return image
    return cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR if k > 1 else cv2.INTER_AREA)


def resize_padded(image: np.ndarray, width: int, height: int, scale: float) -> np.ndarray:
    """Resize by `scale` (`shrink`) and pad bottom/right with zeros to (height, width)."""
    small = image if scale >= 1.0 else shrink(image, scale)
    sh, sw = small.shape[:2]
    out = np.zeros((height, width, 3), np.uint8)
    out[:min(sh, height), :min(sw, width)] = small[:height, :width]
    return out
