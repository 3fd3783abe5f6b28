"""The tfjs reader: manifest parsing, dequantisation, size checks, layouts, graph execution."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from veil.models.store import fetch_many
from veil.models.tfjs import (
    TfjsFormatError,
    conv_filter_to_torch,
    decode_weights,
    depthwise_filter_to_torch,
    load_weights_manifest,
    parse_weight_specs,
    same_padding,
)
from veil.models.tfjs_graph import GraphModule


def _write_model(tmp: Path, entries: list[dict], blobs: list[bytes]) -> Path:
    (tmp / "m.bin").write_bytes(b"".join(blobs))
    manifest = tmp / "m-weights_manifest.json"
    manifest.write_text(json.dumps([{"paths": ["m.bin"], "weights": entries}]))
    return manifest


def test_dequantises_uint8_uint16_float16(tmp_path: Path) -> None:
    entries = [
        {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "b", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 0.25, "min": 2.0}},
        {"name": "c", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "d", "shape": [1], "dtype": "int32"},
        {"name": "e", "shape": [], "dtype": "float32"},
    ]
    blobs = [np.array([0, 1, 2, 255], np.uint8).tobytes(), np.array([0, 4, 65535], "<u2").tobytes(),
             np.array([1.5, -0.25], "<f2").tobytes(), np.array([7], "<i4").tobytes(), np.array([3.5], "<f4").tobytes()]
    w = load_weights_manifest(_write_model(tmp_path, entries, blobs))
    np.testing.assert_array_equal(w["a"], [[-1.0, -0.5], [0.0, 126.5]])
    np.testing.assert_array_equal(w["b"], [2.0, 3.0, 65535 * 0.25 + 2.0])
    np.testing.assert_array_equal(w["c"], [1.5, -0.25])
    assert w["c"].dtype == np.float32 and w["d"].dtype == np.int32 and w["d"][0] == 7
    assert w["e"].shape == () and float(w["e"]) == 3.5


def test_size_mismatch_is_an_error_that_says_what_to_do() -> None:
    specs = parse_weight_specs([{"name": "a", "shape": [4], "dtype": "float32"}])
    with pytest.raises(TfjsFormatError, match="declares 16 bytes.*hold 15.*re-fetch"):
        decode_weights(specs, b"\0" * 15)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "x-weights_manifest.json"
    manifest.write_text(json.dumps([{"paths": ["nope.bin"], "weights": []}]))
    with pytest.raises(TfjsFormatError, match="nope.bin"):
        load_weights_manifest(manifest)


@pytest.mark.parametrize("size,k,s,expected", [(5, 3, 1, (1, 1)), (5, 3, 2, (1, 1)), (6, 3, 2, (0, 1)),
                                                (150, 7, 2, (2, 3)), (4, 1, 1, (0, 0))])
def test_same_padding_puts_odd_pixel_after(size: int, k: int, s: int, expected: tuple[int, int]) -> None:
    assert same_padding(size, k, s) == expected


def test_conv_layout_conversion_matches_nhwc_convolution() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)  # NHWC
    w = rng.normal(size=(3, 3, 2, 6)).astype(np.float32)  # kh kw in out
    ref = np.zeros((1, 2, 3, 6), np.float32)  # valid conv, by hand
    for i in range(2):
        for j in range(3):
            ref[0, i, j] = np.einsum("hwc,hwco->o", x[0, i:i + 3, j:j + 3], w)
    got = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), conv_filter_to_torch(w))
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), ref, rtol=1e-5, atol=1e-5)
    dw = rng.normal(size=(3, 3, 2, 1)).astype(np.float32)
    got = torch.nn.functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), depthwise_filter_to_torch(dw), groups=2)
    ref_dw = np.einsum("hwc,hwc->c", x[0, 1:4, 2:5], dw[..., 0])
    np.testing.assert_allclose(got[0, :, 1, 2].numpy(), ref_dw, rtol=1e-5)


def _node(name: str, op: str, inputs: list[str] | None = None, **attr: object) -> dict:
    return {"name": name, "op": op, "input": inputs or [], "attr": attr}


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


@pytest.mark.parametrize("fuse", [True, False])
def test_graph_module_runs_conv_same_stride2_bias_relu_mean_matmul(fuse: bool) -> None:
    rng = np.random.default_rng(1)
    weights = {"k": rng.normal(size=(3, 3, 1, 2)).astype(np.float32), "b": np.array([0.5, -0.5], np.float32),
               "axes": np.array([1, 2], np.int32), "fc": rng.normal(size=(2, 3)).astype(np.float32),
               "fcb": np.array([1.0, 2.0, 3.0], np.float32)}
    conv_attr = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": _s("SAME"), "data_format": _s("NHWC")}
    nodes = [_node(n, "Const") for n in weights] + [
        _node("x", "Placeholder"), _node("conv", "Conv2D", ["x", "k"], **conv_attr),
        _node("add", "Add", ["conv", "b"]), _node("relu", "Relu", ["add"]),
        _node("mean", "Mean", ["relu", "axes"], keep_dims={"b": False}),
        _node("dense", "_FusedMatMul", ["mean", "fc", "fcb"], fused_ops={"list": {"s": [_s("BiasAdd")["s"]]}}),
    ]
    g = GraphModule(nodes, weights, ["mean", "dense"], fuse=fuse)
    x = rng.normal(size=(1, 1, 6, 6)).astype(np.float32)
    mean, fc = g(torch.from_numpy(x))
    padded = np.pad(x[0, 0], ((0, 1), (0, 1)))  # 6 -> 3 with k3 s2: one pixel after
    conv = np.array([[[np.sum(padded[2 * i:2 * i + 3, 2 * j:2 * j + 3] * weights["k"][:, :, 0, o]) for j in range(3)]
                      for i in range(3)] for o in range(2)])
    ref_mean = np.maximum(conv + weights["b"][:, None, None], 0).mean(axis=(1, 2))
    np.testing.assert_allclose(mean[0].numpy(), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fc[0].numpy(), ref_mean @ weights["fc"] + weights["fcb"], rtol=1e-5)


def test_graph_module_refuses_unknown_ops() -> None:
    with pytest.raises(TfjsFormatError, match="FancyOp"):
        GraphModule([_node("x", "Placeholder"), _node("y", "FancyOp", ["x"])], {}, ["y"])


def test_real_manifests_add_up_to_their_shards() -> None:
    paths = fetch_many(["faceapi/face_recognition_model-weights_manifest.json", "faceapi/face_recognition_model.bin",
                        "faceapi/face_expression_model-weights_manifest.json", "faceapi/face_expression_model.bin"])
    rec = load_weights_manifest(paths["faceapi/face_recognition_model-weights_manifest.json"])
    assert len(rec) == 117 and rec["fc"].shape == (256, 128) and rec["conv32_down/conv/filters"].shape == (7, 7, 3, 32)
    expr = load_weights_manifest(paths["faceapi/face_expression_model-weights_manifest.json"])
    assert expr["fc/weights"].shape == (256, 7)


def test_fusing_conv_batchnorm_relu6_keeps_the_result() -> None:
    from veil.models.store import fetch_many
    from veil.models.tfjs import load_graph_model

    path = fetch_many(["human/faceres.json", "human/faceres.bin"])["human/faceres.json"]
    nodes, weights = load_graph_model(path)
    fused = GraphModule(nodes, weights, ["global_pooling/Mean"])
    plain = GraphModule(nodes, weights, ["global_pooling/Mean"], fuse=False)
    assert len(fused._steps) < len(plain._steps) / 3  # 27 conv+bn+relu6 chains became 27 steps
    x = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], plain(x)[0], rtol=1e-4, atol=1e-4)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_pad_and_reshape_follow_tensorflow() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)  # NHWC
    paddings = np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32)  # uneven on purpose
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)  # [kh, kw, in, out]
    conv = {"padding": {"s": _b64("VALID")}, "strides": {"list": {"i": ["1", "2", "2", "1"]}}}
    nodes = [
        {"name": "x", "op": "Placeholder"},
        {"name": "paddings", "op": "Const"}, {"name": "w", "op": "Const"},
        {"name": "flat_shape", "op": "Const"}, {"name": "back_shape", "op": "Const"},
        {"name": "pad", "op": "Pad", "input": ["x", "paddings"]},
        {"name": "conv", "op": "Conv2D", "input": ["pad", "w"], "attr": conv},
        {"name": "flat", "op": "Reshape", "input": ["conv", "flat_shape"]},
        {"name": "back", "op": "Reshape", "input": ["flat", "back_shape"]},
    ]
    padded = np.pad(x[0], paddings[1:])  # (7, 6, 2)
    out = np.stack([np.stack([np.tensordot(padded[i:i + 3, j:j + 3], w, axes=3) for j in range(0, 4, 2)])
                    for i in range(0, 5, 2)])  # VALID, stride 2: (3, 2, 3)
    weights = {"paddings": paddings, "w": w, "flat_shape": np.array([-1, out.size], np.int32),
               "back_shape": np.array([1, 3, 2, 3], np.int32)}
    flat, back = GraphModule(nodes, weights, ["flat", "back"])(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(flat.numpy(), out.reshape(1, -1), rtol=1e-5, atol=1e-5)  # NHWC element order
    np.testing.assert_allclose(back.permute(0, 2, 3, 1).numpy(), out[None], rtol=1e-5, atol=1e-5)
