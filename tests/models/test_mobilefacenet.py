"""Golden tests of MobileFaceNet (the third recognizer) and of the TFLite graph executor under it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from veil.align import ARCFACE_CROP
from veil.models.mobilefacenet import MobileFaceNet
from veil.models.tflite_graph import TfliteGraph, TfliteModule, TfliteOp

PEOPLE = {
    "obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden",
    "0-f1-su-ph.jpg": "f1", "0-f15-hao-ph.jpg": "f15", "15-f13-anc-ph.jpg": "f13", "45-m7-di-ph.jpg": "m7",
}

# TensorFlow Lite's own interpreter (tflite-runtime 2.14.0, built-in kernels, and XNNPACK within
# 4e-5) on _pattern() and its upside-down copy: the first six normalised outputs of each and their cosine.
REFERENCE_HEAD = np.array([[-0.004848, 0.026996, 0.021914, -0.000004, -0.054006, -0.002743],
                           [0.001716, 0.029668, 0.012861, -0.003175, -0.053889, 0.058149]])
REFERENCE_COSINE = 0.517494


def _pattern() -> np.ndarray:
    """A 112x112 RGB test card that needs no photo or landmarks: (112, 112, 3) float32 in 0..255."""
    h, w, c = np.meshgrid(np.arange(112), np.arange(112), np.arange(3), indexing="ij")
    return ((2 * h + w + 85 * c) % 256).astype(np.float32)


@pytest.fixture(scope="module")
def net() -> MobileFaceNet:
    return MobileFaceNet.pretrained()


def test_matches_the_tflite_interpreter(net: MobileFaceNet) -> None:
    card = _pattern()
    x = torch.from_numpy(np.stack([card, card[::-1].copy()])).permute(0, 3, 1, 2)
    with torch.no_grad():
        d = net(x).numpy()
    np.testing.assert_allclose(d[:, :6], REFERENCE_HEAD, atol=1e-5)
    assert d[0] @ d[1] == pytest.approx(REFERENCE_COSINE, abs=1e-5)


def test_same_person_below_threshold_different_above(net: MobileFaceNet, dlib_ref, photo: Callable,
                                                      pair_distances: Callable) -> None:
    crops = [dlib_ref.aligned(photo(name), ARCFACE_CROP) for name in PEOPLE]
    with torch.no_grad():
        d = net(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()).numpy()
    assert d.shape == (len(PEOPLE), 192)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    same, diff = pair_distances(d, list(PEOPLE.values()))
    # measured: Obama-Obama 0.62-0.64, impostors 1.08-1.59 (Obama-Biden 1.41-1.50)
    assert max(same) < net.threshold < min(diff), (same, diff)
    assert max(same) == pytest.approx(0.64, abs=0.05) and min(diff) == pytest.approx(1.08, abs=0.05)


def test_is_differentiable(net: MobileFaceNet) -> None:
    x = (torch.rand(1, 3, 112, 112) * 255).requires_grad_(True)
    net(x)[0, :10].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(112, 112, 3), (1, 112, 112, 3), (2, 3, 224, 224), (3, 112, 112)])
def test_rejects_wrong_shape(net: MobileFaceNet, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 112, 112\)"):
        net(torch.rand(shape))


@pytest.mark.parametrize("batch", [1, 3])
def test_any_batch_size(net: MobileFaceNet, batch: int) -> None:
    # the file fixes its batch at 2; each face's descriptor must not depend on its batch mates
    x = torch.rand(batch, 3, 112, 112, generator=torch.Generator().manual_seed(batch)) * 255
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i : i + 1]) for i in range(batch)])
    assert together.shape == (batch, 192)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


# --- the executor on a tiny hand-built graph, against numpy written from TFLite's definitions ---


def _conv_nhwc(x: np.ndarray, w: np.ndarray, stride: int, pad: tuple[int, int]) -> np.ndarray:
    """Plain convolution: x (H, W, I), w (O, kh, kw, I), ``pad`` rows/columns before and after."""
    x = np.pad(x, (pad, pad, (0, 0)))
    o, kh, kw, _ = w.shape
    oh, ow = (x.shape[0] - kh) // stride + 1, (x.shape[1] - kw) // stride + 1
    out = np.zeros((oh, ow, o))
    for i in range(oh):
        for j in range(ow):
            patch = x[i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_executor_matches_tflite_semantics() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 4, 2)).astype(np.float32)
    conv_w, conv_b = rng.normal(size=(3, 3, 3, 2)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    dw_w, dw_b = rng.normal(size=(1, 3, 3, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)
    half_slope = rng.uniform(0.05, 0.3, size=6).astype(np.float32)
    same, act = {"same": True, "dilation": (1, 1)}, {"activation": 0}
    graph = TfliteGraph(
        names=[f"t{i}" for i in range(15)],
        shapes=[(1, 4, 4, 2), (3, 3, 3, 2), (3,), (1, 2, 2, 3), (1, 3, 3, 6), (6,)] + [(1, 2, 2, 6)] * 4
        + [(6,), (1, 2, 2, 6), (1, 2, 2, 6), (2,), (1, 24)],
        constants={1: conv_w, 2: conv_b, 4: dw_w, 5: dw_b, 10: half_slope, 13: np.array([1, 24], np.int32)},
        ops=[
            TfliteOp("CONV_2D", [0, 1, 2], [3], {**same, "stride": (2, 2), "activation": 1}),  # fused RELU
            TfliteOp("DEPTHWISE_CONV_2D", [3, 4, 5], [6], {**same, "stride": (1, 1), **act}),  # multiplier 2
            TfliteOp("RELU", [6], [7]), TfliteOp("ABS", [6], [8]), TfliteOp("SUB", [6, 8], [9], dict(act)),
            TfliteOp("MUL", [10, 9], [11], dict(act)), TfliteOp("ADD", [7, 11], [12], dict(act)),
            TfliteOp("RESHAPE", [12, 13], [14]),
        ],
        inputs=[0], outputs=[14],
    )
    module = TfliteModule(graph)
    assert [op.name for op in module.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "RESHAPE"]

    # SAME with stride 2 on 4 pixels: out 2, padding (2-1)*2 + 3 - 4 = 1, all of it bottom/right
    y = np.maximum(_conv_nhwc(x, conv_w, 2, (0, 1)) + conv_b, 0)
    # depthwise, multiplier 2: output channel c*2 + m reads input channel c; SAME stride 1 pads 1 and 1
    dw = np.concatenate([_conv_nhwc(y[..., c : c + 1], dw_w[0, :, :, 2 * c + m][None, :, :, None], 1, (1, 1))
                         for c in range(3) for m in range(2)], axis=-1) + dw_b
    z = np.maximum(dw, 0) + half_slope * (dw - np.abs(dw))
    expected = z.reshape(1, 24)  # TFLite reshapes in NHWC order

    (got,) = module(torch.from_numpy(x).permute(2, 0, 1)[None])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
