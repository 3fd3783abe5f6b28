"""dlib's 29-layer face-recognition ResNet in PyTorch, loaded from face-api's tfjs weights.

The network maps a 150x150 aligned face crop (see :mod:`veil.align`, ``RECOGNIZER_CROP``) to a
128-D descriptor; two faces belong to the same person when their descriptors are closer than
0.6 in L2 (dlib's own threshold). Being a torch module, it is differentiable, which is what the
cloak needs: gradients of a descriptor distance flow back to the crop's pixels.

The weights ship in ``@vladmandic/face-api`` (npm) as ``face_recognition_model``; the layer
layout follows that package's ``src/faceRecognitionNet/`` (a port of dlib's
``dlib_face_recognition_resnet_model_v1``).

Usage::

    >>> net = FaceRecognizer.pretrained()                      # doctest: +SKIP
    >>> crops = torch.rand(2, 3, 150, 150) * 255               # doctest: +SKIP
    >>> net(crops).shape                                        # doctest: +SKIP
    torch.Size([2, 128])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from veil.models.tfjs import conv_filter_to_torch, load_weights_manifest, pad_same

__all__ = ["FaceRecognizer", "MEAN_RGB", "descriptor_distance"]

MEAN_RGB = (122.782, 117.001, 104.298)
"""dlib's ``input_rgb_image`` mean, subtracted before the first layer."""

# dlib divides the centred pixels by 256 (``input_rgb_image``), face-api's port by 255; with the
# uint8-quantised weights both stay ~0.035 from dlib's descriptors, 255 marginally closer.
_INPUT_DIVISOR = 255.0

_RESIDUAL_BLOCKS = (
    ("conv32_1", False), ("conv32_2", False), ("conv32_3", False),
    ("conv64_down", True), ("conv64_1", False), ("conv64_2", False), ("conv64_3", False),
    ("conv128_down", True), ("conv128_1", False), ("conv128_2", False),
    ("conv256_down", True), ("conv256_1", False), ("conv256_2", False),
    ("conv256_down_out", True),
)


def descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distance between descriptors.

    Shape:
        a: (..., D), b: (..., D) -> (...)
    """
    return torch.linalg.vector_norm(a - b, dim=-1)


class _ConvScale(nn.Module):
    """conv + bias followed by dlib's affine ``scale`` layer, folded into one conv."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, stride: int, same: bool) -> None:
        super().__init__()
        filters = conv_filter_to_torch(weights[f"{prefix}/conv/filters"])
        bias = torch.from_numpy(weights[f"{prefix}/conv/bias"])
        scale = torch.from_numpy(weights[f"{prefix}/scale/weights"])
        shift = torch.from_numpy(weights[f"{prefix}/scale/biases"])
        # (conv(x) + bias) * scale + shift == conv_{w * scale}(x) + (bias * scale + shift)
        self.weight = nn.Parameter(filters * scale[:, None, None, None], requires_grad=False)
        self.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
        self.stride = stride
        self.same = same

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[-1]
        padding = 0
        if self.same and self.stride == 1 and k % 2 == 1:
            padding = k // 2  # symmetric: let the conv pad (F.pad copies, slowly in channels-last)
        elif self.same:
            x = pad_same(x, (k, k), (self.stride, self.stride))
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), stride=self.stride, padding=padding)


class _Residual(nn.Module):
    def __init__(self, weights: dict[str, np.ndarray], prefix: str, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = _ConvScale(weights, f"{prefix}/conv1", 2 if down else 1, same=not down)
        self.conv2 = _ConvScale(weights, f"{prefix}/conv2", 1, same=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        if not self.down:
            return torch.relu(out + x)
        # dlib's down blocks: a 2x2 average-pooled shortcut, zero-padded to the new channel count;
        # when "valid" striding leaves the main path one pixel smaller, it is zero-padded at the
        # bottom/right (face-api's residualDown).
        shortcut = F.avg_pool2d(x, 2, 2)
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))
        dh, dw = shortcut.shape[2] - out.shape[2], shortcut.shape[3] - out.shape[3]
        if dh or dw:
            out = F.pad(out, (0, dw, 0, dh))
        return torch.relu(out + shortcut)


class FaceRecognizer(nn.Module):
    """dlib ResNet face recognizer (128-D descriptors).

    Attributes:
        threshold: L2 distance under which two descriptors are the same person (0.6, dlib's).
        input_size: side of the aligned crop it expects (150).

    Shape:
        forward(crops): crops (B, 3, 150, 150) float RGB in 0..255 -> (B, 128) descriptors
        (not normalised; dlib's descriptors have a norm near 1).
    """

    threshold: float = 0.6
    input_size: int = 150
    name: str = "dlib"

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.stem = _ConvScale(weights, "conv32_down", stride=2, same=False)
        self.blocks = nn.ModuleList(_Residual(weights, p, down) for p, down in _RESIDUAL_BLOCKS)
        fc = torch.from_numpy(weights["fc"])  # [256, 128]
        self.fc = nn.Parameter(fc, requires_grad=False)

    @classmethod
    def pretrained(cls, manifest: Path | str | None = None) -> "FaceRecognizer":
        """The network with face-api's weights, fetched into veil's cache on first use."""
        if manifest is None:
            from veil.models.store import fetch_many

            paths = fetch_many(["faceapi/face_recognition_model-weights_manifest.json",
                                "faceapi/face_recognition_model.bin"])
            manifest = paths["faceapi/face_recognition_model-weights_manifest.json"]
        return cls(load_weights_manifest(manifest)).eval().to(memory_format=torch.channels_last)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"expected crops of shape (B, 3, 150, 150), got {tuple(crops.shape)}")
        # channels-last runs oneDNN's fast (depthwise) convolutions on CPU: 2-4x faster here
        crops = crops.contiguous(memory_format=torch.channels_last)
        x = (crops - self.mean.to(crops.dtype)) / _INPUT_DIVISOR
        x = torch.relu(self.stem(x))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3)) @ self.fc.to(x.dtype)

    def same_person(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Whether descriptors belong to the same person at this recognizer's threshold."""
        return descriptor_distance(a, b) < self.threshold
