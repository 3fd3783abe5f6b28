"""The protection protocol and registry, and the masks shared by protections.

A protection is a callable `(frame, faces, state) -> frame` on one (H, W, 3) uint8 RGB frame. It
returns a new frame and changes nothing outside its faces' masks. Anything it must remember
across frames (a seed per track, the previous cloak) lives in the `ProtectState` the pipeline
creates for each video and passes in, never in a global.

Adding a protection is one file with ``@register("name")`` on a dataclass whose fields are its
options; `get_protector` fills them from the CLI's options by name, so the CLI needs no change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from veil.errors import InputError
from veil.faces import FACE, PERSON, PLATE, REGION, SILHOUETTE_MARGIN, Faces, silhouette_frame

__all__ = [
    "Protector", "ProtectState", "register", "register_lazy", "get_protector", "protector_names", "protector_options",
    "face_mask", "ellipse_boxes", "rng_for", "mask_everything", "target_regions", "protection_mask", "KIND_SCALE",
    "FACES_ONLY", "whole_target_methods",
]


@dataclass
class ProtectState:
    """Per-video state handed to a protection with every frame.

    `frame_index` is set by the pipeline; `seed` makes random protections reproducible;
    `memory` belongs to the protection (e.g. per-track data), `stats` collects per-frame numbers
    the protection wants in the run's summary (lists keyed by name).
    """

    seed: int = 0
    frame_index: int = 0
    memory: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, list] = field(default_factory=dict)


@runtime_checkable
class Protector(Protocol):
    name: str

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray: ...


_REGISTRY: dict[str, type] = {}
_LAZY: dict[str, str] = {}  # name -> module that registers it when imported


def register_lazy(name: str, module: str) -> None:
    """Make ``--method name`` known now but import `module` (which registers it) only when used.

    The learned protections pull in torch and their models; a run with a classic method should
    not pay for importing them.
    """
    _LAZY[name] = module


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a protection available as ``--method name``."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"protection {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def protector_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY))


def protector_options(name: str) -> dict[str, Any]:
    """The options of a protection and their defaults."""
    cls = _lookup(name)
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(cls) if f.init}


def whole_target_methods() -> list[str]:
    """The methods that protect people and plates as well as faces (the learned ones, registered
    lazily, are all made for faces)."""
    return sorted(n for n, cls in _REGISTRY.items() if n not in _LAZY and not getattr(cls, FACES_ONLY, False))


def _lookup(name: str) -> type:
    if name not in _REGISTRY and name in _LAZY:
        importlib.import_module(_LAZY[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(protector_names())}") from None


def get_protector(name: str, **options: Any) -> Protector:
    """Build a protection from its name and options (``None`` = the option's default).

    Raises `InputError` for an unknown method, an option the method does not have (naming the
    ones it has: a misspelt option must not silently change nothing) or a bad value.
    """
    cls = _lookup(name)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise InputError(f"--method {name} has no option {', '.join(map(repr, unknown))}; "
                         f"its options: {', '.join(sorted(names)) or 'none'}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad option for --method {name}: {exc}") from None


# A face box grows by at least this much on every side: a detector's box of a face 20-40 pixels
# wide is off by several pixels, and `mask_scale` alone leaves such a face a margin of 3-6; a
# blurred head that keeps its outline still reads as a face to another detector.
MIN_MARGIN_PX = 8.0


def ellipse_boxes(faces: Faces, mask_scale: float) -> np.ndarray:
    """Face boxes grown by `mask_scale` about their centres, and by at least `MIN_MARGIN_PX` on
    every side. Shape: (N, 4) xyxy."""
    b = faces.boxes
    c = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    half = np.stack([(b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2], axis=1)
    half = np.maximum(half * mask_scale, half + MIN_MARGIN_PX)
    return np.concatenate([c - half, c + half], axis=1)


# How much a box that is not a face is grown before it is masked (``--mask-scale`` is the face's):
# a person's, to the frame its silhouette covers and room for the silhouette's border; a plate's
# box is tight around the characters.
KIND_SCALE = {PERSON: 1 + 2 * SILHOUETTE_MARGIN + 0.06, PLATE: 1.15, REGION: 1.0}
# A person's silhouette is grown by this share of the box height (at least 2 pixels) before it is
# masked: the segmentation's edge is soft and a pixel of hair or sleeve must not be left.
SILHOUETTE_BORDER = 0.03

# The attribute a protection sets when it works on faces only (it needs their landmarks).
FACES_ONLY = "faces_only"


def _region(box: np.ndarray, scale: float, shape: tuple[int, ...]) -> tuple[tuple[float, float, float, float],
                                                                          tuple[int, int, int, int]] | None:
    x1, y1, x2, y2 = ellipse_boxes(Faces(box[None], np.zeros((1, 5, 2)), np.zeros(1)), scale)[0]
    h, w = shape[:2]
    ix1, iy1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    ix2, iy2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return (x1, y1, x2, y2), (ix1, iy1, ix2, iy2)


def _silhouette_in(region: tuple[int, int, int, int], box: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """A person's silhouette placed in `region`'s pixels and grown by its border."""
    ix1, iy1, ix2, iy2 = region
    fx1, fy1, fx2, fy2 = silhouette_frame(box)
    person = cv2.resize(silhouette.astype(np.uint8), (fx2 - fx1, fy2 - fy1), interpolation=cv2.INTER_NEAREST)
    mask = np.zeros((iy2 - iy1, ix2 - ix1), np.uint8)
    ox1, oy1, ox2, oy2 = max(fx1, ix1), max(fy1, iy1), min(fx2, ix2), min(fy2, iy2)  # the overlap
    if ox2 > ox1 and oy2 > oy1:
        mask[oy1 - iy1:oy2 - iy1, ox1 - ix1:ox2 - ix1] = person[oy1 - fy1:oy2 - fy1, ox1 - fx1:ox2 - fx1]
    border = max(2, int(round(SILHOUETTE_BORDER * (box[3] - box[1]))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1, 2 * border + 1))
    return cv2.dilate(mask, kernel).astype(bool)


def target_regions(shape: tuple[int, ...], faces: Faces, mask_scale: float, ellipse: bool = True):
    """Where each detection is masked: ``(i, (ix1, iy1, ix2, iy2), mask)`` per detection inside the
    frame, `mask` an (iy2-iy1, ix2-ix1) bool array over that pixel region, or None for all of it.

    A face: the ellipse (`ellipse`) or box inscribed in its box grown by `mask_scale`. A person:
    its silhouette grown by a border when it has one, else the whole (grown) box. A plate: its box.
    """
    for i in range(len(faces)):
        kind = int(faces.kinds[i])
        found = _region(faces.boxes[i], mask_scale if kind == FACE else KIND_SCALE[kind], shape)
        if found is None:
            continue
        (x1, y1, x2, y2), (ix1, iy1, ix2, iy2) = found
        if kind == PERSON and faces.silhouettes[i] is not None:
            yield i, (ix1, iy1, ix2, iy2), _silhouette_in((ix1, iy1, ix2, iy2), faces.boxes[i], faces.silhouettes[i])
        elif kind == FACE and ellipse:
            mask = np.zeros((iy2 - iy1, ix2 - ix1), np.uint8)
            center = ((x1 + x2) / 2 - ix1, (y1 + y2) / 2 - iy1)
            cv2.ellipse(mask, (int(round(center[0])), int(round(center[1]))),
                        (max(1, int(np.ceil((x2 - x1) / 2))), max(1, int(np.ceil((y2 - y1) / 2)))),
                        0, 0, 360, 1, thickness=-1)
            yield i, (ix1, iy1, ix2, iy2), mask.astype(bool)
        else:
            yield i, (ix1, iy1, ix2, iy2), None


def protection_mask(shape: tuple[int, ...], faces: Faces, protector: object) -> np.ndarray:
    """The pixels `protector` may change in a frame with `faces`: its own ``mask`` where it has one,
    else the face ellipses at its ``mask_scale`` (1.3 when it has none). Shape: returns (H, W) bool."""
    own = getattr(protector, "mask", None)
    if callable(own):
        return own(shape, faces)
    return face_mask(shape, faces, getattr(protector, "mask_scale", 1.3))


def face_mask(shape: tuple[int, ...], faces: Faces, mask_scale: float = 1.3, ellipse: bool = True) -> np.ndarray:
    """Boolean mask of the faces' regions: ellipses (or boxes) inscribed in the grown boxes.

    Shape: returns (H, W) bool.
    """
    h, w = shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for x1, y1, x2, y2 in ellipse_boxes(faces, mask_scale):
        if ellipse:
            center = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
            axes = (max(1, int(np.ceil((x2 - x1) / 2))), max(1, int(np.ceil((y2 - y1) / 2))))
            cv2.ellipse(mask, center, axes, 0, 0, 360, 1, thickness=-1)
        else:
            mask[max(0, int(y1)):max(0, int(np.ceil(y2))), max(0, int(x1)):max(0, int(np.ceil(x2)))] = 1
    return mask.astype(bool)


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by the seed and keys (e.g. track id, frame index), stable across runs."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def mask_everything(frame: np.ndarray) -> np.ndarray:
    """The fail-closed frame: every pixel masked (used when detection failed on a frame)."""
    return np.zeros_like(frame)
