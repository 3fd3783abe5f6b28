"""face-api's facial-expression classifier in PyTorch (7 classes).

A 112x112 face crop goes through four dense blocks of depthwise-separable convolutions
(face-api's ``FaceFeatureExtractor``, ``src/faceFeatureExtractor/``) and a linear layer
(``src/faceExpressionNet/``); a softmax gives the probabilities of :data:`EXPRESSIONS`.
veil uses it to measure whether a protection keeps a face's expression (``veil evaluate``) and as
QM-VAE's black-box service.

Usage::

    >>> net = ExpressionNet.pretrained()                                   # doctest: +SKIP
    >>> probs = net(crops)            # (B, 3, 112, 112) RGB 0..255 -> (B, 7)  # doctest: +SKIP
    >>> EXPRESSIONS[int(probs[0].argmax())]                                # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from veil.models.recognizer import MEAN_RGB
from veil.models.tfjs import conv_filter_to_torch, depthwise_filter_to_torch, load_weights_manifest, pad_same

__all__ = ["EXPRESSIONS", "ExpressionNet", "FaceFeatureNet"]

EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
"""Class order of the network's output."""


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class _SeparableConv(nn.Module):
    """TensorFlow ``separableConv2d`` ("same") + bias: depthwise 3x3 then pointwise 1x1."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, stride: int) -> None:
        super().__init__()
        self.depthwise = _param(depthwise_filter_to_torch(weights[f"{prefix}/depthwise_filter"]))
        self.pointwise = _param(conv_filter_to_torch(weights[f"{prefix}/pointwise_filter"]))
        self.bias = _param(torch.from_numpy(weights[f"{prefix}/bias"]))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:  # symmetric "same": let the conv pad (F.pad copies)
            x = F.conv2d(x, self.depthwise.to(x.dtype), padding=1, groups=x.shape[1])
        else:
            x = pad_same(x, (3, 3), (self.stride, self.stride))
            x = F.conv2d(x, self.depthwise.to(x.dtype), stride=self.stride, groups=x.shape[1])
        return F.conv2d(x, self.pointwise.to(x.dtype), self.bias.to(x.dtype))


class _Conv(nn.Module):
    """Plain 3x3 stride-2 "same" conv + bias (the first layer)."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        super().__init__()
        self.weight = _param(conv_filter_to_torch(weights[f"{prefix}/filters"]))
        self.bias = _param(torch.from_numpy(weights[f"{prefix}/bias"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, (3, 3), (2, 2))
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), stride=2)


class _DenseBlock(nn.Module):
    """face-api's ``denseBlock4``: each conv sees the sum of all earlier outputs (ReLU'd)."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str, first: bool) -> None:
        super().__init__()
        self.conv0 = _Conv(weights, f"{prefix}/conv0") if first else _SeparableConv(weights, f"{prefix}/conv0", 2)
        self.convs = nn.ModuleList(_SeparableConv(weights, f"{prefix}/conv{i}", 1) for i in (1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.conv0(x))
        total = out
        for conv in self.convs:  # out is already ReLU'd, so relu(total) is right for conv1 too
            total = total + conv(torch.relu(total))
        return torch.relu(total)


class FaceFeatureNet(nn.Module):
    """face-api's ``FaceFeatureExtractor`` (four dense blocks and a 7x7 average pool, 256 features
    at 112 px) and one linear layer: the body that face-api's expression and 68-landmark nets share.

    Shape:
        linear(crops): (B, 3, 112, 112) float RGB in 0..255 -> (B, outputs)
    """

    input_size: int = 112

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.blocks = nn.ModuleList(_DenseBlock(weights, f"dense{i}", first=i == 0) for i in range(4))
        self.fc_weight = _param(torch.from_numpy(weights["fc/weights"]))  # [256, outputs]
        self.fc_bias = _param(torch.from_numpy(weights["fc/bias"]))

    @classmethod
    def from_store(cls, manifest_name: str, weights_name: str, manifest: Path | str | None = None):
        """The network with face-api's weights (store names), fetched into veil's cache on first use."""
        if manifest is None:
            from veil.models.store import fetch_many

            manifest = fetch_many([manifest_name, weights_name])[manifest_name]
        return cls(load_weights_manifest(manifest)).eval().to(memory_format=torch.channels_last)

    def linear(self, crops: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"expected crops of shape (B, 3, {size}, {size}), got {tuple(crops.shape)}")
        # channels-last runs oneDNN's fast (depthwise) convolutions on CPU: 2-4x faster here
        crops = crops.contiguous(memory_format=torch.channels_last)
        x = (crops - self.mean.to(crops.dtype)) / 255.0
        for block in self.blocks:
            x = block(x)
        # face-api: avgPool 7x7 stride 2 "valid", i.e. the global mean of the 7x7 map at 112 px
        x = F.avg_pool2d(x, 7, 2).flatten(1)
        return x @ self.fc_weight.to(x.dtype) + self.fc_bias.to(x.dtype)


class ExpressionNet(FaceFeatureNet):
    """Facial-expression classifier.

    Shape:
        forward(crops): (B, 3, 112, 112) float RGB in 0..255 -> (B, 7) probabilities
        logits(crops): the same, before the softmax
    """

    labels: tuple[str, ...] = EXPRESSIONS

    @classmethod
    def pretrained(cls, manifest: Path | str | None = None) -> "ExpressionNet":
        """The network with face-api's weights, fetched into veil's cache on first use."""
        return cls.from_store("faceapi/face_expression_model-weights_manifest.json",
                              "faceapi/face_expression_model.bin", manifest)

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        return self.linear(crops)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(crops), dim=-1)
