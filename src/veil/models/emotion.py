"""A second, independent facial-expression classifier: Human's ``emotion`` net (7 classes).

veil measures expressions with face-api's :class:`veil.models.expression.ExpressionNet`; this one
validates those measurements with a network of different origin (oarriaga's ``face_classification``
mini-Xception, trained on FER-2013), different input (64x64 grayscale) and a different crop. The
model ships in ``@vladmandic/human`` 3.3.6 (npm) as a tfjs graph model (``models/emotion.json`` +
``emotion.bin``), executed by :class:`veil.models.tfjs_graph.GraphModule` (differentiable).

Input contract and preprocessing, as Human does it (file names inside the npm package):

* ``models/emotion.json``: one placeholder ``input_1`` of shape (-1, 64, 64, 1); the graph ends in a
  ``Softmax``, so its output is already a probability vector.
* ``src/gear/emotion.ts``: a 1-channel input selects the grayscale branch, whose labels are, in the
  network's order, ``angry, disgust, fear, happy, sad, surprise, neutral`` (oarriaga). The face tensor
  (RGB in 0..1) is resized to 64x64 with ``tf.image.resizeBilinear(image, [64, 64], false)``
  (no align-corners, no half-pixel centres), turned to gray with the weights ``constants.rgb`` =
  ``0.2989, 0.5870, 0.1140`` (``src/tfjs/constants.ts``), then mapped to -1..1 by ``(g - 0.5) * 2``.
  The optional ``config.face.emotion.crop`` is unset by default (``src/config.ts``).
* The face tensor it receives is ``face.tensor`` (``src/face/face.ts``), cut in ``src/face/facemesh.ts``
  by ``correctFaceRotation`` -> ``cutAndResize`` (``src/face/facemeshutil.ts``): ``tf.image.cropAndResize``
  (bilinear, black outside the image, box corners divided by the image height/width) to the face
  mesh's input size, 192 (``models/facemesh.json``), divided by 255. Rotation correction is off by
  default (``config.face.detector.rotation: false``), histogram equalisation too.
* The box is BlazeFace's (``src/face/blazeface.ts`` ``getBoxes``): the detector box enlarged about its
  centre by ``config.face.detector.scale`` = 1.4 (``enlargeBox``), then made square on its longer
  side with corners rounded to whole pixels (``squarifyBox``, ``Math.round``).

Since 192 / 64 = 3 exactly, the resize samples every third pixel of the 192-px crop without
interpolating; :func:`crop_gray` therefore samples the frame once, at those positions, with
``cropAndResize``'s own formula. Here the caller's detector box stands in for BlazeFace's box; on
later video frames Human re-centres the box on its face mesh instead, which this does not model.
Human's own BlazeFace (run once, outside veil, on 7 single-face test photos) gave boxes whose longer
side is 0.75-1.0x CenterFace's and whose centre sits ~7% of the side lower. The net is sensitive to
the crop: on 34 CenterFace faces its top label agrees with face-api's on 17 at Human's 1.4x, on 25
with a box 0.7x as large (tests/models/test_emotion.py).

Usage::

    >>> net = HumanEmotion.pretrained()                                    # doctest: +SKIP
    >>> probs = net.probabilities(frame_rgb, faces.boxes)   # (N, 7), in LABELS order  # doctest: +SKIP
    >>> LABELS[int(probs[0].argmax())]                                     # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from veil.models.expression import EXPRESSIONS
from veil.models.tfjs import load_graph_model
from veil.models.tfjs_graph import GraphModule

__all__ = ["LABELS", "HUMAN_LABELS", "HumanEmotion", "human_face_box", "crop_gray", "box_probabilities"]

LABELS = EXPRESSIONS
"""face-api's label order (neutral, happy, sad, angry, fearful, disgusted, surprised): outputs come in it."""

HUMAN_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The network's own output order (``src/gear/emotion.ts``, grayscale models)."""

_TO_FACE_API = (6, 3, 4, 0, 2, 1, 5)  # LABELS[i] is HUMAN_LABELS[_TO_FACE_API[i]]
_OUTPUT_NODE = "Identity"
INPUT_SIZE = 64
MESH_SIZE = 192
"""Side of Human's face tensor (the face mesh's input), from which the 64-px input is resized."""
ENLARGE = 1.4
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def human_face_box(boxes: np.ndarray, scale: float = ENLARGE) -> np.ndarray:
    """Human's face crop box: enlarged about the centre, squared on the longer side, rounded.

    Shape:
        boxes: (N, 4) xyxy -> (N, 4) xyxy float64, whole pixels
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = scale * (boxes[:, 2:] - boxes[:, :2]).max(axis=1, keepdims=True) / 2
    return np.floor(np.concatenate([centre - half, centre + half], axis=1) + 0.5)  # JS Math.round


def _sample_positions(start: float, end: float, length: int) -> np.ndarray:
    """cropAndResize's source coordinates for the rows (or columns) kept by the 192 -> 64 resize.

    Shape:
        -> (INPUT_SIZE,) float64, in pixels of an axis of ``length`` pixels
    """
    lo, hi = start / length, end / length  # Human divides the corners by the image size
    rows = np.arange(INPUT_SIZE) * (MESH_SIZE // INPUT_SIZE)
    return lo * (length - 1) + rows * (hi - lo) * (length - 1) / (MESH_SIZE - 1)


def _bilinear(gray: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """TensorFlow cropAndResize's bilinear sampling, 0 outside the image.

    Shape:
        gray: (H, W), ys: (S,), xs: (S,) -> (S, S)
    """
    h, w = gray.shape
    y0, y1 = np.floor(ys).astype(int), np.ceil(ys).astype(int)
    x0, x1 = np.floor(xs).astype(int), np.ceil(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    inside = ((ys >= 0) & (ys <= h - 1))[:, None] & ((xs >= 0) & (xs <= w - 1))[None, :]
    y0, y1 = np.clip(y0, 0, h - 1), np.clip(y1, 0, h - 1)
    x0, x1 = np.clip(x0, 0, w - 1), np.clip(x1, 0, w - 1)
    top = gray[y0][:, x0] + (gray[y0][:, x1] - gray[y0][:, x0]) * fx
    bottom = gray[y1][:, x0] + (gray[y1][:, x1] - gray[y1][:, x0]) * fx
    return np.where(inside, top + (bottom - top) * fy, 0.0)


def crop_gray(frame_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The network's input for each face, preprocessed as Human does (see the module docstring).

    Shape:
        frame_rgb: (H, W, 3) uint8 RGB, boxes: (N, 4) xyxy detector boxes -> (N, 1, 64, 64) float32
        in -1..1
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame_rgb.shape}")
    h, w = frame_rgb.shape[:2]
    # the grayscale weights are linear, so converting before sampling gives the same values
    gray = frame_rgb.astype(np.float64) @ np.array(GRAY_WEIGHTS) / 255.0
    crops = [
        _bilinear(gray, _sample_positions(y1, y2, h), _sample_positions(x1, x2, w))
        for x1, y1, x2, y2 in human_face_box(boxes)
    ]
    out = np.stack(crops) if crops else np.zeros((0, INPUT_SIZE, INPUT_SIZE))
    return ((out - 0.5) * 2.0).astype(np.float32)[:, None]


class HumanEmotion(nn.Module):
    """Human's emotion classifier (oarriaga mini-Xception), outputs in face-api's label order.

    Shape:
        forward(x): (B, 1, 64, 64) float gray in -1..1 (see :func:`crop_gray`) -> (B, 7)
        probabilities in :data:`LABELS` order
        probabilities(frame_rgb, boxes): (H, W, 3) uint8, (N, 4) xyxy -> (N, 7) float32
    """

    input_size: int = INPUT_SIZE
    labels: tuple[str, ...] = LABELS
    name: str = "human-emotion"

    def __init__(self, graph: GraphModule) -> None:
        super().__init__()
        self.graph = graph
        self.register_buffer("order", torch.tensor(_TO_FACE_API), persistent=False)

    @classmethod
    def pretrained(cls, model_json: Path | str | None = None) -> "HumanEmotion":
        """The network with Human's weights, fetched into veil's cache on first use."""
        if model_json is None:
            from veil.models.store import fetch_many

            model_json = fetch_many(["human/emotion.json", "human/emotion.bin"])["human/emotion.json"]
        nodes, weights = load_graph_model(model_json)
        return cls(GraphModule(nodes, weights, [_OUTPUT_NODE])).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected input of shape (B, 1, 64, 64), got {tuple(x.shape)}")
        (probs,) = self.graph(x)
        return probs[:, self.order]

    @torch.no_grad()
    def probabilities(self, frame_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Expression probabilities of each face box, cropped the way Human crops it.

        Shape:
            frame_rgb: (H, W, 3) uint8 RGB, boxes: (N, 4) xyxy float -> (N, 7) float32, LABELS order
        """
        return box_probabilities(self, crop_gray(frame_rgb, boxes))


def box_probabilities(net: nn.Module, crops: np.ndarray) -> np.ndarray:
    """A grey-crop classifier's probabilities on its crops (none: an empty (0, 7)).

    Shape: crops (N, 1, S, S) float32 -> (N, 7) float32
    """
    if len(crops) == 0:
        return np.zeros((0, len(LABELS)), np.float32)
    return net(torch.from_numpy(crops)).numpy().astype(np.float32)
