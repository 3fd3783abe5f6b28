"""``--method qmvae``: every face replaced by QM-VAE's fusion of its de-identifications.

Per face per frame: align to the model's crop, de-identify it the model's ways (its checkpoint
names them), run the model, paste the generated crop back under a feathered ellipse. The original
face only ever reaches the model through those de-identified versions.

The model is loaded when the protection is built, so a missing or broken checkpoint stops the run
before any frame is written. With no ``checkpoint`` option the shipped model
(``src/veil/weights/qmvae.pt``, made by ``python -m veil.qmvae_train --default``) is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from veil.align import crop_faces, paste_faces
from veil.faces import Faces
from veil.protect.base import ProtectState, register, rng_for

if TYPE_CHECKING:  # the model (torch, vector-quantize-pytorch) loads only when the method is used
    from veil.models.qmvae import QMVAE

__all__ = ["QMVAEProtect", "soft_ellipse", "generate"]


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


def generate(model: QMVAE, crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The model's faces for aligned crops: de-identify each the model's ways, decode.

    Shape:
        crops: (N, S, S, 3) uint8 -> (N, S, S, 3) uint8
    """
    import torch

    from veil.qmvae_data import deidentify_batch

    cfg = model.config
    x = deidentify_batch(crops, cfg.inputs, cfg.crop, rng)
    with torch.inference_mode():
        faces = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0).faces
    return np.clip(np.rint(faces.permute(0, 2, 3, 1).numpy() * 255.0), 0, 255).astype(np.uint8)


@register("qmvae")
@dataclass
class QMVAEProtect:
    """QM-VAE (utility-keeping de-identification). Options: ``checkpoint`` (a `veil train qmvae`
    file; default: the shipped model), ``mask_radius``/``feather`` (the pasted ellipse, fractions of
    the crop)."""

    checkpoint: str | None = None
    mask_radius: float = 0.47
    feather: float = 0.08
    model: QMVAE = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from veil.qmvae_train import default_checkpoint, load_checkpoint

        if not 0 < self.mask_radius <= 0.6 or not 0 <= self.feather < self.mask_radius:
            raise ValueError(f"need 0 < mask_radius <= 0.6 and 0 <= feather < mask_radius, "
                             f"got {self.mask_radius}, {self.feather}")
        path = Path(self.checkpoint) if self.checkpoint else default_checkpoint()
        self.model = load_checkpoint(path).model.eval()
        self._mask = soft_ellipse(self.model.config.size, self.mask_radius, self.feather)

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        if len(faces) == 0:
            return frame.copy()
        spec = self.model.config.crop
        crops = crop_faces(frame, faces.landmarks, spec)
        generated = generate(self.model, crops, rng_for(state.seed, state.frame_index))
        state.stats.setdefault("qmvae_faces", []).append(len(faces))
        return paste_faces(frame, generated, faces.landmarks, spec, mask=self._mask)
