"""A second, different face recognizer: Human's ``faceres`` (HSE FaceRes, MobileNet, 1024-D).

It exists to test whether a protection *transfers*: a cloak optimised against the dlib ResNet
(:mod:`veil.models.recognizer`) should also fool a network it never saw. The model ships in
``@vladmandic/human`` (npm) as a tfjs graph model, executed here by
:class:`veil.models.tfjs_graph.GraphModule` (differentiable, like the dlib port). Its other heads (age,
gender) are not evaluated.

The descriptor is the graph's ``global_pooling/Mean`` output, L2-normalised; two faces are the
same person when the L2 distance of their descriptors is below :attr:`FaceRes.threshold`, a value
measured on face_recognition's Obama x3 / Biden photos (see tests/models/test_faceres.py).

Usage::

    >>> net = FaceRes.pretrained()                       # doctest: +SKIP
    >>> net(torch.rand(1, 3, 224, 224) * 255).shape      # doctest: +SKIP
    torch.Size([1, 1024])
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from veil.models.tfjs import load_graph_model
from veil.models.tfjs_graph import GraphModule

__all__ = ["FaceRes"]

_DESCRIPTOR_NODE = "global_pooling/Mean"


class FaceRes(nn.Module):
    """Human's faceres recognizer.

    Attributes:
        threshold: L2 distance between normalised descriptors under which two faces are the same
            person. Measured on the real photos (:data:`veil.align.FACERES_CROP`): Obama-Obama
            0.73-0.80, Obama-Biden 0.91-1.02 (MTCNN or dlib landmarks); 0.87 sits between.
        input_size: side of the aligned crop it expects (224).
        files: the graph and weights in veil's store (:mod:`veil.models.store`).

    Shape:
        forward(crops): (B, 3, 224, 224) float RGB in 0..255 -> (B, 1024) unit-norm descriptors
    """

    threshold: float = 0.87
    input_size: int = 224
    name: str = "faceres"
    files: tuple[str, str] = ("human/faceres.json", "human/faceres.bin")

    def __init__(self, graph: GraphModule) -> None:
        super().__init__()
        self.graph = graph

    @classmethod
    def pretrained(cls, model_json: Path | str | None = None) -> FaceRes:
        """The network with Human's weights, fetched into veil's cache on first use."""
        if model_json is None:
            from veil.models.store import fetch_many

            model_json = fetch_many(list(cls.files))[cls.files[0]]
        nodes, weights = load_graph_model(model_json)
        return cls(GraphModule(nodes, weights, [_DESCRIPTOR_NODE])).eval().to(memory_format=torch.channels_last)

    def prepare(self, crops: torch.Tensor) -> torch.Tensor:
        """The graph's input from RGB crops in 0..255 (Human's faceres takes them as they are)."""
        return crops

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if crops.dim() != 4 or tuple(crops.shape[1:]) != (3, size, size):
            raise ValueError(f"expected crops of shape (B, 3, {size}, {size}), got {tuple(crops.shape)}")
        # channels-last runs oneDNN's fast (depthwise) convolutions on CPU: 2-4x faster here
        (features,) = self.graph(self.prepare(crops).contiguous(memory_format=torch.channels_last))
        return torch.nn.functional.normalize(features, dim=-1)
