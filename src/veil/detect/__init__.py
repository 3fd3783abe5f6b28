"""Face detectors (one registry: CenterFace, MTCNN) and the tracker that gives faces ids across
frames, fills the frames between detections and ends tracks at scene cuts.

May import: `veil.models` (the networks' weights), `veil.device`, `veil.faces`, `veil.align`, `veil.errors`. Part
of the core: works on arrays, imports no media code.
"""

from __future__ import annotations

import numpy as np

from veil.detect import centerface  # noqa: F401  (registers the detector)
from veil.detect.base import DETECT_SIZE, Detector, detector_names, get_detector, nms, register_detector
from veil.detect.track import Tracker, TrackerConfig
from veil.faces import Faces

__all__ = ["DETECT_SIZE", "Detector", "Faces", "Tracker", "TrackerConfig", "detect", "detector_names",
           "get_detector", "nms", "register_detector"]

_CACHE: dict[tuple, Detector] = {}


@register_detector("mtcnn")
def _mtcnn(**options: object) -> Detector:
    # Imported on use: MTCNN runs on torch, which a CenterFace run need not load.
    from veil.detect.mtcnn import MTCNN

    return MTCNN(**options)


def detect(image: np.ndarray, detector: str = "centerface", **options: object) -> Faces:
    """Faces in one (H, W, 3) uint8 RGB image (the detector is built once and reused)."""
    key = (detector, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = get_detector(detector, **options)
    return _CACHE[key].detect(image)
