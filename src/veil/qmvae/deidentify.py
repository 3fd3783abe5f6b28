"""QM-VAE's input: an aligned face crop de-identified k ways (the paper's Eq. 1-3 and the cartoon).

The de-identifications are the classic protections of :mod:`veil.protect.classic`, applied to the
aligned crop with their default strengths; the eye band of the blindfold sits on the crop's
template eye points, where alignment puts every face's eyes.
"""

from __future__ import annotations

import cv2
import numpy as np

from veil.align import CropSpec, template_points
from veil.protect.classic import Blur, Cartoon, Mosaic, Noise, eye_band

__all__ = ["deidentify", "deidentify_batch"]


def deidentify(crop: np.ndarray, name: str, spec: CropSpec, rng: np.random.Generator) -> np.ndarray:
    """One classic de-identification of an aligned crop (QM-VAE Eq. 1-3 and the cartoon).

    Shape:
        crop: (S, S, 3) uint8 -> (S, S, 3) uint8
    """
    face_px = spec.size / (1 + 2 * spec.padding)  # the mean face's width in the crop
    if name == "blindfold":  # Eq. 1: the eye band set to 0
        out = crop.copy()
        corners = eye_band(template_points(spec)[:2])
        cv2.fillConvexPoly(out, np.round(corners).astype(np.int32), (0, 0, 0), lineType=cv2.LINE_8)
        return out
    if name == "mosaic":  # Eq. 2
        return Mosaic().transform(crop, face_px, rng)
    if name == "noise":  # Eq. 3
        return Noise().transform(crop, face_px, rng)
    if name == "cartoon":
        return Cartoon().transform(crop, face_px, rng)
    if name == "blur":
        return Blur().transform(crop, face_px, rng)
    raise ValueError(f"unknown de-identification {name!r}")


def deidentify_batch(crops: np.ndarray, inputs: tuple[str, ...], spec: CropSpec,
                     rng: np.random.Generator) -> np.ndarray:
    """The model's input: each crop de-identified by every method of ``inputs``, on channels.

    Shape:
        crops: (N, S, S, 3) uint8 -> (N, S, S, 3k) uint8, k = len(inputs)
    """
    out = np.zeros((*crops.shape[:3], 3 * len(inputs)), np.uint8)
    for i, crop in enumerate(crops):
        out[i] = np.concatenate([deidentify(crop, name, spec, rng) for name in inputs], axis=-1)
    return out
