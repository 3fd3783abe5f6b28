"""Read TensorFlow.js models: weight manifests, binary shards and (small) graph models.

A tfjs model is a JSON file plus one or more ``.bin`` shards. The JSON's weights manifest is a
list of groups; each group names its shard files and its weights in order, each with ``name``,
``shape``, ``dtype`` and, when stored quantised, ``quantization`` (``uint8``/``uint16``:
value = q * scale + min; ``float16``: half floats). Weights are packed back to back across the
concatenated shards, so the sum of their sizes must equal the shards' bytes exactly.

Layouts differ from PyTorch: convolution filters are ``[kh, kw, in, out]`` (torch wants
``[out, in, kh, kw]``), depthwise filters ``[kh, kw, C, multiplier]``, and TensorFlow's "same"
padding puts the odd extra pixel at the bottom/right. The helpers below convert.

A *graph model* (``format: graph-model``) also carries a TensorFlow GraphDef; :class:`GraphModule`
executes the handful of ops that small vision nets use, in torch, so gradients flow through it.

Usage::

    >>> from veil.models.tfjs import load_weights_manifest
    >>> weights = load_weights_manifest(path_to_manifest_json)   # doctest: +SKIP
    >>> weights["conv32_down/conv/filters"].shape                # doctest: +SKIP
    (7, 7, 3, 32)
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TfjsFormatError",
    "WeightSpec",
    "parse_weight_specs",
    "decode_weights",
    "load_weights_manifest",
    "load_graph_model",
    "conv_filter_to_torch",
    "depthwise_filter_to_torch",
    "same_padding",
    "pad_same",
    "GraphModule",
]

_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("u1"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}


class TfjsFormatError(ValueError):
    """A tfjs manifest or shard does not have the structure or size it declares."""


@dataclass(frozen=True)
class WeightSpec:
    """One weight entry of a manifest: where it lies and how it is stored."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the dtype after decoding
    stored_dtype: str  # the dtype in the shard (the quantisation dtype when quantised)
    scale: float | None = None
    minimum: float | None = None

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.count * _DTYPES[self.stored_dtype].itemsize


def parse_weight_specs(entries: list[dict[str, Any]]) -> list[WeightSpec]:
    """Parse one group's ``weights`` list into :class:`WeightSpec` objects."""
    specs = []
    for e in entries:
        q = e.get("quantization")
        dtype = e["dtype"]
        stored = q["dtype"] if q else dtype
        if stored not in _DTYPES:
            raise TfjsFormatError(f"weight {e['name']!r}: unsupported stored dtype {stored!r}")
        if q and stored in ("uint8", "uint16") and ("scale" not in q or "min" not in q):
            raise TfjsFormatError(f"weight {e['name']!r}: {stored} quantisation without scale/min")
        specs.append(WeightSpec(
            name=e["name"], shape=tuple(int(s) for s in e["shape"]), dtype=dtype, stored_dtype=stored,
            scale=q.get("scale") if q else None, minimum=q.get("min") if q else None,
        ))
    return specs


def decode_weights(specs: list[WeightSpec], buffer: bytes) -> dict[str, np.ndarray]:
    """Cut a concatenated shard buffer into named arrays, dequantising as declared.

    Raises :class:`TfjsFormatError` if the declared sizes do not add up to ``len(buffer)``.
    """
    total = sum(s.nbytes for s in specs)
    if total != len(buffer):
        raise TfjsFormatError(
            f"manifest declares {total} bytes of weights but the shards hold {len(buffer)}; "
            "the .bin files do not belong to this manifest (re-fetch them)"
        )
    out: dict[str, np.ndarray] = {}
    offset = 0
    for s in specs:
        raw = np.frombuffer(buffer, dtype=_DTYPES[s.stored_dtype], count=s.count, offset=offset)
        offset += s.nbytes
        if s.stored_dtype in ("uint8", "uint16") and s.dtype == "float32" and s.scale is not None:
            values = raw.astype(np.float32) * np.float32(s.scale) + np.float32(s.minimum)
        else:
            values = raw.astype(_DTYPES[s.dtype])
        out[s.name] = values.reshape(s.shape)
    return out


def _read_groups(groups: list[dict[str, Any]], folder: Path) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in groups:
        shards = [folder / Path(p).name for p in group["paths"]]
        missing = [str(p) for p in shards if not p.is_file()]
        if missing:
            raise TfjsFormatError(f"missing weight shard(s): {', '.join(missing)}")
        buffer = b"".join(p.read_bytes() for p in shards)
        weights.update(decode_weights(parse_weight_specs(group["weights"]), buffer))
    return weights


def load_weights_manifest(manifest: Path | str, folder: Path | str | None = None) -> dict[str, np.ndarray]:
    """All weights named in a ``*-weights_manifest.json``, as float32/int32 numpy arrays.

    Shards are looked up by file name in ``folder`` (default: the manifest's folder).
    """
    manifest = Path(manifest)
    groups = json.loads(manifest.read_text())
    if not isinstance(groups, list):
        raise TfjsFormatError(f"{manifest} is not a weights manifest (expected a JSON list of groups)")
    return _read_groups(groups, Path(folder) if folder else manifest.parent)


def load_graph_model(model_json: Path | str, folder: Path | str | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The GraphDef nodes and the weights of a tfjs ``graph-model`` JSON."""
    model_json = Path(model_json)
    spec = json.loads(model_json.read_text())
    if spec.get("format") != "graph-model" or "modelTopology" not in spec:
        raise TfjsFormatError(f"{model_json} is not a tfjs graph model (format {spec.get('format')!r})")
    weights = _read_groups(spec["weightsManifest"], Path(folder) if folder else model_json.parent)
    return spec["modelTopology"]["node"], weights


def conv_filter_to_torch(w: np.ndarray) -> torch.Tensor:
    """tfjs conv filter to torch layout.

    Shape:
        w: (kh, kw, in, out) -> (out, in, kh, kw)
    """
    if w.ndim != 4:
        raise TfjsFormatError(f"a conv filter has 4 axes, got shape {w.shape}")
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))


def depthwise_filter_to_torch(w: np.ndarray) -> torch.Tensor:
    """tfjs depthwise filter to a torch grouped-conv weight (``groups = C``).

    Shape:
        w: (kh, kw, C, M) -> (C * M, 1, kh, kw)
    """
    if w.ndim != 4:
        raise TfjsFormatError(f"a depthwise filter has 4 axes, got shape {w.shape}")
    kh, kw, c, m = w.shape
    return torch.from_numpy(np.ascontiguousarray(w.reshape(kh, kw, c * m).transpose(2, 0, 1)))[:, None]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) along one axis; the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Zero-pad an NCHW tensor so that a "valid" conv/pool acts like TensorFlow's "same".

    Shape:
        x: (B, C, H, W) -> (B, C, H + ph, W + pw)
    """
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


# --- graph models ------------------------------------------------------------------------------

def _attr_ints(node: dict, key: str) -> list[int]:
    return [int(i) for i in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def _attr_str(node: dict, key: str) -> str:
    raw = node.get("attr", {}).get(key, {}).get("s", "")
    return base64.b64decode(raw).decode() if raw else ""


def _attr_strs(node: dict, key: str) -> list[str]:
    raw = node.get("attr", {}).get(key, {}).get("list", {}).get("s", [])
    return [base64.b64decode(s).decode() for s in raw]


def _channels_last_const(value: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-channel constant (NHWC semantics) onto an NCHW tensor."""
    if other.dim() == 4 and value.dim() == 1 and value.numel() > 1:
        return value.view(1, -1, 1, 1)
    return value


class GraphModule(nn.Module):
    """Execute a tfjs GraphDef with torch ops (NCHW inside, differentiable).

    Supported ops: Placeholder, Const, Identity, Conv2D, DepthwiseConv2dNative, Add, AddV2,
    BiasAdd, Sub, Mul, Relu, Relu6, Minimum, Maximum, Mean, MatMul, _FusedMatMul (BiasAdd, Relu),
    Sigmoid, Softmax. Any other op raises :class:`TfjsFormatError` at construction, naming it.

    Args:
        nodes: the ``modelTopology.node`` list.
        weights: name -> array, as :func:`load_graph_model` returns them.
        outputs: node names to return, in order.

    Shape:
        forward(x): x (B, 3, H, W) for an NHWC placeholder of (B, H, W, 3); 4-D outputs come back
        NCHW, 2-D ones as (B, N).
    """

    _SUPPORTED = {
        "Placeholder", "Const", "Identity", "Conv2D", "DepthwiseConv2dNative", "Add", "AddV2",
        "BiasAdd", "Sub", "Mul", "Relu", "Relu6", "Minimum", "Maximum", "Mean", "MatMul",
        "_FusedMatMul", "Sigmoid", "Softmax",
    }

    def __init__(self, nodes: list[dict], weights: dict[str, np.ndarray], outputs: list[str]) -> None:
        super().__init__()
        unknown = sorted({n["op"] for n in nodes} - self._SUPPORTED)
        if unknown:
            raise TfjsFormatError(f"graph uses ops this reader does not implement: {', '.join(unknown)}")
        by_name = {n["name"]: n for n in nodes}
        self._order = self._topological(by_name, outputs)
        self._nodes = by_name
        self._outputs = list(outputs)
        self._buffer_names: dict[str, str] = {}
        conv_inputs = {n["input"][1] for n in nodes if n["op"] == "Conv2D"}
        dw_inputs = {n["input"][1] for n in nodes if n["op"] == "DepthwiseConv2dNative"}
        for i, name in enumerate(n for n in self._order if by_name[n]["op"] == "Const"):
            if name not in weights:
                raise TfjsFormatError(f"graph constant {name!r} has no weight in the shards")
            w = weights[name]
            if name in conv_inputs:
                t = conv_filter_to_torch(w.astype(np.float32))
            elif name in dw_inputs:
                t = depthwise_filter_to_torch(w.astype(np.float32))
            else:
                t = torch.from_numpy(np.array(w))
            key = f"c{i}"
            self.register_buffer(key, t)
            self._buffer_names[name] = key

    @staticmethod
    def _topological(by_name: dict[str, dict], outputs: list[str]) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(o, False) for o in reversed(outputs)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            if name not in by_name:
                raise TfjsFormatError(f"graph has no node {name!r}")
            seen.add(name)
            stack.append((name, True))
            for inp in reversed(by_name[name].get("input", [])):
                stack.append((inp.split(":")[0].lstrip("^"), False))
        return order

    def _conv(self, node: dict, x: torch.Tensor, w: torch.Tensor, depthwise: bool) -> torch.Tensor:
        if _attr_str(node, "data_format") not in ("", "NHWC"):
            raise TfjsFormatError(f"{node['name']}: only NHWC graphs are supported")
        strides = _attr_ints(node, "strides")[1:3] or [1, 1]
        dil = _attr_ints(node, "dilations")[1:3] or [1, 1]
        if dil != [1, 1]:
            raise TfjsFormatError(f"{node['name']}: dilated convolutions are not supported")
        k = (w.shape[-2], w.shape[-1])
        if _attr_str(node, "padding") == "SAME":
            x = pad_same(x, k, (strides[0], strides[1]))
        groups = x.shape[1] if depthwise else 1
        return F.conv2d(x, w.to(x.dtype), stride=tuple(strides), groups=groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        for name in self._order:
            node = self._nodes[name]
            op = node["op"]
            ins = [values[i.split(":")[0]] for i in node.get("input", []) if not i.startswith("^")]
            if op == "Placeholder":
                values[name] = x
            elif op == "Const":
                values[name] = getattr(self, self._buffer_names[name])
            elif op == "Identity":
                values[name] = ins[0]
            elif op in ("Conv2D", "DepthwiseConv2dNative"):
                values[name] = self._conv(node, ins[0], ins[1], op == "DepthwiseConv2dNative")
            elif op in ("Add", "AddV2", "BiasAdd", "Sub", "Mul", "Minimum", "Maximum"):
                a, b = ins
                a = _channels_last_const(a.to(b.dtype) if not a.is_floating_point() else a, b)
                b = _channels_last_const(b.to(a.dtype) if not b.is_floating_point() else b, a)
                fn = {"Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub,
                      "Mul": torch.mul, "Minimum": torch.minimum, "Maximum": torch.maximum}[op]
                values[name] = fn(a, b.to(a.dtype))
            elif op == "Relu":
                values[name] = torch.relu(ins[0])
            elif op == "Relu6":
                values[name] = torch.clamp(ins[0], 0.0, 6.0)
            elif op == "Mean":
                axes = [int(a) for a in ins[1].reshape(-1).tolist()]
                nchw = {0: 0, 1: 2, 2: 3, 3: 1} if ins[0].dim() == 4 else {a: a for a in range(4)}
                keep = node.get("attr", {}).get("keep_dims", {}).get("b", False)
                values[name] = ins[0].mean(dim=[nchw[a % ins[0].dim()] for a in axes], keepdim=keep)
            elif op in ("MatMul", "_FusedMatMul"):
                values[name] = self._matmul(node, ins)
            elif op == "Sigmoid":
                values[name] = torch.sigmoid(ins[0])
            elif op == "Softmax":
                values[name] = torch.softmax(ins[0], dim=-1)
        return [values[o] for o in self._outputs]

    @staticmethod
    def _matmul(node: dict, ins: list[torch.Tensor]) -> torch.Tensor:
        attr = node.get("attr", {})
        a, b = ins[0], ins[1].to(ins[0].dtype)
        if attr.get("transpose_a", {}).get("b"):
            a = a.t()
        if attr.get("transpose_b", {}).get("b"):
            b = b.t()
        out = a @ b
        for fused in _attr_strs(node, "fused_ops"):
            if fused == "BiasAdd":
                out = out + ins[2].to(out.dtype)
            elif fused == "Relu":
                out = torch.relu(out)
            else:
                raise TfjsFormatError(f"{node['name']}: fused op {fused!r} is not supported")
        return out
