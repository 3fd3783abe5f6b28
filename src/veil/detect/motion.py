"""Camera motion between consecutive frames, for the tracker to carry its faces along.

Between two looks of the detector the tracker predicts where each face went from the face's own
velocity; a face seen once has none yet. In a camera pan every face moves with the camera, and a
small face moves most of its width in a frame: a prediction that stands still leaves it half
uncovered. The shift of the whole picture is measured by phase correlation (OpenCV's
`cv2.phaseCorrelate`, sub-pixel, ~1 ms on a 320-pixel-wide grey copy: a smaller copy is
cheaper but misses a 1080p pan by 3-5 pixels) and handed to
:meth:`veil.detect.track.Tracker.push`, which moves every track by it on every frame (global
motion compensation, as BoT-SORT does for its tracks). A shift the correlation is not sure of (a cut, a
flat or changing picture) counts as none: the tracker then predicts as it did without it.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CameraMotion"]

WIDTH = 320  # pixels (at least) of the grey copy the shift is measured on
MIN_RESPONSE = 0.3  # the correlation peak's strength below which the shift is not trusted


class CameraMotion:
    """The shift of each frame's picture from the previous one's (the previous one given to
    `update`), in full-frame pixels.

    >>> motion = CameraMotion()
    >>> motion.update(frame)  # doctest: +SKIP  (dx, dy): (0.0, 0.0) for the first frame
    """

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None

    def update(self, image: np.ndarray) -> tuple[float, float]:
        """Shape: image (H, W, 3) uint8 RGB -> (dx, dy): where the picture's content moved."""
        step = max(1, image.shape[1] // WIDTH)
        # Every step-th pixel of every step-th row, as OpenCV's nearest-neighbour resize takes them
        # (2-3x faster than NumPy's strided copy of the same pixels).
        small = cv2.resize(image, (image.shape[1] // step, image.shape[0] // step), interpolation=cv2.INTER_NEAREST)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return 0.0, 0.0
        (dx, dy), response = cv2.phaseCorrelate(previous, grey)
        if response < MIN_RESPONSE:
            return 0.0, 0.0
        return float(dx * step), float(dy * step)

    def reset(self) -> None:
        """Forget the previous frame (a frame that cannot be compared, a garbled one, comes between)."""
        self._previous = None
