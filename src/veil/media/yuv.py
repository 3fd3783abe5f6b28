"""8-bit 4:2:0 video frames to RGB and back, through OpenCV.

Nearly every video veil reads and writes is 8-bit 4:2:0, and every frame crosses between YUV and
RGB twice (decode for the detector and the protection, encode for x264). swscale does it in
0.6-0.8 ms a 640x360 frame, and its fast path reads a frame 1-2 levels too dark (its accurate path
does not, at 0.5 ms more); for a protection at several hundred frames/s that is a fifth of the
time. OpenCV's SIMD conversions take 0.04 ms for BT.601 limited range (its I420 convention, equal
to swscale's accurate path within 0.2 level on average) and 0.3-0.5 ms for any other matrix and
range (a 3x4 colour transform at full resolution, chroma scaled with `cv2.resize`). Frames these
functions do not cover (more than 8 bits, other subsamplings, odd sides, a matrix that is not
linear) return None, and the caller goes through swscale as before.

The matrices are FFmpeg's AVCOL_SPC codes; 2 (unspecified) is read as BT.601, as swscale does.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

__all__ = ["yuv420_to_rgb", "rgb_to_yuv420"]

# Luma weights (Kr, Kb) of the linear matrices, by AVCOL_SPC code.
_WEIGHTS = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114),
            7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}  # 10 as 9, as swscale reads it
_BT601 = (0.299, 0.114)


@functools.cache
def _forward(weights: tuple[float, float], full: bool) -> np.ndarray:
    """(3, 4) float32: RGB (0-255) -> Y, Cb, Cr codes, offsets in the last column."""
    kr, kb = weights
    kg = 1.0 - kr - kb
    m = np.array([[kr, kg, kb],
                  [-kr / (1 - kb) / 2, -kg / (1 - kb) / 2, 0.5],
                  [0.5, -kg / (1 - kr) / 2, -kb / (1 - kr) / 2]])
    offset = np.array([0.0, 128.0, 128.0])
    if not full:  # limited ("MPEG") range: luma 16-235, chroma 16-240
        m = m * np.array([[219 / 255], [224 / 255], [224 / 255]])
        offset[0] = 16.0
    return np.hstack([m, offset[:, None]]).astype(np.float32)


@functools.cache
def _inverse(weights: tuple[float, float], full: bool) -> np.ndarray:
    """(3, 4) float32: Y, Cb, Cr codes -> RGB (0-255)."""
    fwd = _forward(weights, full).astype(np.float64)
    inv = np.linalg.inv(fwd[:, :3])
    return np.hstack([inv, (-inv @ fwd[:, 3])[:, None]]).astype(np.float32)


def _covered(width: int, height: int, matrix: int) -> bool:
    return width % 2 == 0 and height % 2 == 0 and matrix in _WEIGHTS


def yuv420_to_rgb(planes: np.ndarray, matrix: int, full: bool) -> np.ndarray | None:
    """An I420 frame as RGB, or None where this module does not cover it.

    Shape:
        planes: (3H/2, W) uint8, PyAV's ``to_ndarray()`` of a yuv420p frame (Y, then U, then V).
        returns: (H, W, 3) uint8 RGB.
    """
    height, width = planes.shape[0] * 2 // 3, planes.shape[1]
    if not _covered(width, height, matrix):
        return None
    weights = _WEIGHTS[matrix]
    if weights == _BT601 and not full:
        return cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
    quarter = height * width // 4
    chroma = planes[height:].reshape(-1)
    u = cv2.resize(chroma[:quarter].reshape(height // 2, width // 2), (width, height), interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(chroma[quarter:].reshape(height // 2, width // 2), (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.transform(cv2.merge([planes[:height], u, v]), _inverse(weights, full))


def rgb_to_yuv420(image: np.ndarray, matrix: int, full: bool) -> np.ndarray | None:
    """An RGB frame as I420 planes, or None where this module does not cover it.

    Shape:
        image: (H, W, 3) uint8 RGB.
        returns: (3H/2, W) uint8, what PyAV's ``VideoFrame.from_ndarray(..., format="yuv420p")`` takes.
    """
    height, width = image.shape[:2]
    if not _covered(width, height, matrix):
        return None
    weights = _WEIGHTS[matrix]
    if weights == _BT601 and not full:
        return cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    y, u, v = cv2.split(cv2.transform(image, _forward(weights, full)))
    half = (width // 2, height // 2)
    u = cv2.resize(u, half, interpolation=cv2.INTER_AREA)
    v = cv2.resize(v, half, interpolation=cv2.INTER_AREA)
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(height * 3 // 2, width)
