"""Execute a tfjs GraphDef (``format: graph-model``) with torch ops.

:class:`GraphModule` runs the handful of ops that small vision nets use, NCHW inside and
differentiable. Before running, it folds what TensorFlow's converter left unfused: a convolution
followed by per-channel ``Mul``/``Add`` (batch norm) becomes one convolution with a bias, and
``Relu -> Minimum(a) -> Maximum(b)`` (Keras' ReLU6) one clamp. On a MobileNet this removes most
elementwise passes over the activations, which dominate its CPU time otherwise.

Usage::

    >>> nodes, weights = load_graph_model("faceres.json")                    # doctest: +SKIP
    >>> net = GraphModule(nodes, weights, outputs=["global_pooling/Mean"])     # doctest: +SKIP
    >>> (features,) = net(torch.rand(1, 3, 224, 224) * 255)                    # doctest: +SKIP
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from veil.models.tfjs import TfjsFormatError, conv_filter_to_torch, depthwise_filter_to_torch, pad_same, same_padding

__all__ = ["GraphModule", "resize_bilinear"]


def _attr_ints(node: dict, key: str) -> list[int]:
    return [int(i) for i in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def _attr_str(node: dict, key: str) -> str:
    raw = node.get("attr", {}).get(key, {}).get("s", "")
    return base64.b64decode(raw).decode() if raw else ""


def _attr_strs(node: dict, key: str) -> list[str]:
    raw = node.get("attr", {}).get(key, {}).get("list", {}).get("s", [])
    return [base64.b64decode(s).decode() for s in raw]


def _input_names(node: dict) -> list[str]:
    return [i.split(":")[0] for i in node.get("input", []) if not i.startswith("^")]


def _channels_last_const(value: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-channel constant (NHWC semantics) onto an NCHW tensor."""
    if other.dim() == 4 and value.dim() == 1 and value.numel() > 1:
        return value.view(1, -1, 1, 1)
    return value


_NHWC_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis of a 4-D tensor, NCHW here


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], half_pixel: bool, align_corners: bool = False) -> torch.Tensor:
    """TensorFlow's ``ResizeBilinear`` on an NCHW tensor (differentiable).

    ``half_pixel`` is torch's ``align_corners=False``; without it (tfjs' default, TF1's resize)
    output pixel i samples input position ``i * in / out``, top-left aligned, which torch lacks.
    """
    h, w = size
    if align_corners or half_pixel:
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=align_corners)

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        return i0, (i0 + 1).clamp(max=n_in - 1), (src - i0).to(x.dtype)

    y0, y1, wy = axis(x.shape[-2], h)
    x0, x1, wx = axis(x.shape[-1], w)
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


@dataclass
class _ConvStep:
    """A convolution with folded per-channel affine and clamp; writes ``output``."""

    output: str
    source: str
    key: str  # buffer prefix: key_w, key_b
    stride: tuple[int, int]
    same: bool
    depthwise: bool
    clamp: tuple[float | None, float | None]


class GraphModule(nn.Module):
    """Execute a tfjs GraphDef with torch ops (NCHW inside, differentiable).

    Supported ops: Placeholder, Const, Identity, Conv2D, DepthwiseConv2dNative, _FusedConv2D and
    FusedDepthwiseConv2dNative (BiasAdd, optionally Relu or Relu6), Conv2DBackpropInput (a
    transposed convolution), Add, AddV2, AddN, BiasAdd, Sub, Mul, Relu, Relu6, Minimum, Maximum,
    Mean, MaxPool, AvgPool (VALID), ResizeBilinear (to a constant size), ConcatV2, MatMul,
    _FusedMatMul (BiasAdd, Relu), Sigmoid, Softmax, Pad (zeros, constant paddings) and Reshape
    (in NHWC element order, as TensorFlow flattens). Any other op raises :class:`TfjsFormatError`
    at construction, naming it.

    Args:
        nodes: the ``modelTopology.node`` list.
        weights: name -> array, as :func:`veil.models.tfjs.load_graph_model` returns them.
        outputs: node names to return, in order.
        fuse: fold conv + affine + clamp chains (same result up to float rounding).

    Shape:
        forward(x): x (B, 3, H, W) for an NHWC placeholder of (B, H, W, 3); 4-D outputs come back
        NCHW, 2-D ones as (B, N).
    """

    _SUPPORTED = {
        "Placeholder", "Const", "Identity", "Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "Add",
        "AddV2", "BiasAdd", "Sub", "Mul", "Relu", "Relu6", "Minimum", "Maximum", "Mean", "MaxPool",
        "MatMul", "_FusedMatMul", "Sigmoid", "Softmax", "FusedDepthwiseConv2dNative", "Conv2DBackpropInput",
        "AddN", "AvgPool", "ResizeBilinear", "ConcatV2", "Pad", "Reshape",
    }
    _CONVS = ("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative")
    _FUSED_CONV = {("BiasAdd",): (None, None), ("BiasAdd", "Relu"): (0.0, None), ("BiasAdd", "Relu6"): (0.0, 6.0)}
    _BINARY = {"Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub,
               "Mul": torch.mul, "Minimum": torch.minimum, "Maximum": torch.maximum}

    def __init__(self, nodes: list[dict], weights: dict[str, np.ndarray], outputs: list[str],
                 fuse: bool = True) -> None:
        super().__init__()
        by_name = {n["name"]: n for n in nodes}
        order = self._topological(by_name, outputs)
        unknown = sorted({by_name[n]["op"] for n in order} - self._SUPPORTED)
        if unknown:
            raise TfjsFormatError(f"graph uses ops this reader does not implement: {', '.join(unknown)}")
        missing = [n for n in order if by_name[n]["op"] == "Const" and n not in weights]
        if missing:
            raise TfjsFormatError(f"graph constants without weights in the shards: {', '.join(missing[:5])}")
        self._nodes = by_name
        self._outputs = list(outputs)
        self._consts = {n: np.asarray(weights[n]) for n in order if by_name[n]["op"] == "Const"}
        self._keys: dict[str, str] = {}
        self._steps: list[str | _ConvStep] = []
        absorbed: set[str] = set()
        consumers: dict[str, list[str]] = {}
        for name in order:
            for inp in _input_names(by_name[name]):
                consumers.setdefault(inp, []).append(name)
        for name in order:
            node = by_name[name]
            if name in absorbed or node["op"] == "Const":
                continue
            if node["op"] in self._CONVS and all(i in self._consts for i in _input_names(node)[1:]):
                step = self._conv_step(node, consumers if fuse else {}, absorbed, len(self._steps))
                self._steps.append(step)
            else:
                self._steps.append(name)
        for i, name in enumerate(n for n in order if by_name[n]["op"] == "Const"):
            used = any(name in _input_names(by_name[s]) for s in self._steps if isinstance(s, str))
            if used:
                self._keys[name] = f"c{i}"
                self.register_buffer(f"c{i}", torch.from_numpy(np.array(self._consts[name])))

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
            for inp in reversed(_input_names(by_name[name])):
                stack.append((inp, False))
        return order

    def _only_consumer(self, name: str, consumers: dict[str, list[str]]) -> dict | None:
        users = consumers.get(name, [])
        if len(users) != 1 or name in self._outputs:
            return None
        return self._nodes[users[0]]

    def _const_operand(self, node: dict, value_name: str) -> np.ndarray | None:
        others = [i for i in _input_names(node) if i != value_name]
        if len(others) == 1 and others[0] in self._consts:
            return self._consts[others[0]].astype(np.float32)
        return None

    def _conv_step(self, node: dict, consumers: dict[str, list[str]], absorbed: set[str], index: int) -> _ConvStep:
        if _attr_str(node, "data_format") not in ("", "NHWC"):
            raise TfjsFormatError(f"{node['name']}: only NHWC graphs are supported")
        if (_attr_ints(node, "dilations")[1:3] or [1, 1]) != [1, 1]:
            raise TfjsFormatError(f"{node['name']}: dilated convolutions are not supported")
        depthwise = node["op"] in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
        raw = self._consts[_input_names(node)[1]].astype(np.float32)
        w = (depthwise_filter_to_torch if depthwise else conv_filter_to_torch)(raw).clone()
        bias = torch.zeros(w.shape[0])
        cur = node["name"]
        lo: float | None = None
        hi: float | None = None
        if node["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):  # conv + BiasAdd (+ Relu/Relu6), fused
            fused = tuple(_attr_strs(node, "fused_ops"))
            if fused not in self._FUSED_CONV or len(_input_names(node)) != 3:
                raise TfjsFormatError(f"{node['name']}: fused ops {list(fused)} are not supported")
            bias = bias + torch.from_numpy(self._consts[_input_names(node)[2]].astype(np.float32).reshape(-1))
            lo, hi = self._FUSED_CONV[fused]
            if lo is not None:  # activation already applied: fold nothing after it
                consumers = {}
        # per-channel affine after the conv: conv_w(x) * s + b == conv_{w*s}(x) + b
        while (nxt := self._only_consumer(cur, consumers)) is not None and nxt["op"] in ("Mul", "Add", "AddV2", "BiasAdd"):
            v = self._const_operand(nxt, cur)
            if v is None or v.size not in (1, w.shape[0]):
                break
            t = torch.from_numpy(v.reshape(-1)).expand(w.shape[0])
            if nxt["op"] == "Mul":
                w, bias = w * t.view(-1, 1, 1, 1), bias * t
            else:
                bias = bias + t
            absorbed.add(nxt["name"])
            cur = nxt["name"]
        nxt = self._only_consumer(cur, consumers)
        if nxt is not None and nxt["op"] in ("Relu", "Relu6"):
            lo, hi = 0.0, (6.0 if nxt["op"] == "Relu6" else None)
            absorbed.add(nxt["name"])
            cur = nxt["name"]
            # Keras ReLU6: Maximum(Minimum(Relu(x), a), b) == clamp(x, 0, a) when b <= 0 <= a
            mn = self._only_consumer(cur, consumers)
            a = self._const_operand(mn, cur) if mn is not None and mn["op"] == "Minimum" else None
            mx = self._only_consumer(mn["name"], consumers) if a is not None and a.size == 1 else None
            b = self._const_operand(mx, mn["name"]) if mx is not None and mx["op"] == "Maximum" else None
            if a is not None and b is not None and b.size == 1 and float(b) <= 0.0 <= float(a):
                hi = float(a) if hi is None else min(hi, float(a))
                absorbed.update({mn["name"], mx["name"]})
                cur = mx["name"]
        key = f"f{index}"
        self.register_buffer(f"{key}_w", w.contiguous())
        self.register_buffer(f"{key}_b", bias)
        stride = tuple(_attr_ints(node, "strides")[1:3] or [1, 1])
        return _ConvStep(cur, _input_names(node)[0], key, stride, _attr_str(node, "padding") == "SAME",
                         depthwise, (lo, hi))

    def _run_conv(self, step: _ConvStep, x: torch.Tensor) -> torch.Tensor:
        w = getattr(self, f"{step.key}_w").to(x.dtype)
        b = getattr(self, f"{step.key}_b").to(x.dtype)
        k = (w.shape[-2], w.shape[-1])
        padding: int | tuple[int, int] = 0
        if step.same:
            pads = [same_padding(x.shape[-2], k[0], step.stride[0]), same_padding(x.shape[-1], k[1], step.stride[1])]
            if all(p[0] == p[1] for p in pads):  # symmetric: let the conv pad, no extra copy
                padding = (pads[0][0], pads[1][0])
            else:
                x = pad_same(x, k, step.stride)
        out = F.conv2d(x, w, b, stride=step.stride, padding=padding, groups=x.shape[1] if step.depthwise else 1)
        lo, hi = step.clamp
        # in place is safe: the conv's backward needs its input and weight, not its output
        return out if lo is None and hi is None else out.clamp_(lo, hi)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        for step in self._steps:
            if isinstance(step, _ConvStep):
                values[step.output] = self._run_conv(step, values[step.source])
                continue
            node = self._nodes[step]
            op = node["op"]
            ins = [values[i] if i in values else getattr(self, self._keys[i]) for i in _input_names(node)]
            values[step] = self._run_node(node, op, ins, x)
        return [values[o] for o in self._outputs]

    def _run_node(self, node: dict, op: str, ins: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if op == "Placeholder":
            return x
        if op == "Identity":
            return ins[0]
        if op in self._CONVS:
            raise TfjsFormatError(f"{node['name']}: convolutions need constant filters")
        if op in self._BINARY:
            a, b = ins
            a = a if a.is_floating_point() else a.to(b.dtype)
            b = b if b.is_floating_point() else b.to(a.dtype)
            return self._BINARY[op](_channels_last_const(a, b), _channels_last_const(b, a).to(a.dtype))
        if op == "Relu":
            return torch.relu(ins[0])
        if op == "Relu6":
            return torch.clamp(ins[0], 0.0, 6.0)
        if op == "Mean":
            axes = [int(a) for a in ins[1].reshape(-1).tolist()]
            nchw = {0: 0, 1: 2, 2: 3, 3: 1} if ins[0].dim() == 4 else {a: a for a in range(8)}
            keep = node.get("attr", {}).get("keep_dims", {}).get("b", False)
            return ins[0].mean(dim=[nchw[a % ins[0].dim()] for a in axes], keepdim=keep)
        if op == "MaxPool":
            return self._max_pool(node, ins[0])
        if op in ("MatMul", "_FusedMatMul"):
            return self._matmul(node, ins)
        if op == "Sigmoid":
            return torch.sigmoid(ins[0])
        if op == "AddN":
            return torch.stack(ins).sum(dim=0)
        if op == "AvgPool":
            if _attr_str(node, "padding") != "VALID":
                raise TfjsFormatError(f"{node['name']}: only VALID average pooling is supported")
            return F.avg_pool2d(ins[0], tuple(_attr_ints(node, "ksize")[1:3]), tuple(_attr_ints(node, "strides")[1:3]))
        if op == "ResizeBilinear":
            h, w = (int(v) for v in ins[1].reshape(-1).tolist())
            attr = node.get("attr", {})
            return resize_bilinear(ins[0], (h, w), bool(attr.get("half_pixel_centers", {}).get("b")),
                                   bool(attr.get("align_corners", {}).get("b")))
        if op == "ConcatV2":
            axis = int(ins[-1].reshape(-1)[0])
            return torch.cat(ins[:-1], dim=_NHWC_AXIS[axis % 4] if ins[0].dim() == 4 else axis)
        if op == "Conv2DBackpropInput":
            return self._transposed_conv(node, ins)
        if op == "Pad":
            return self._pad(ins[0], ins[1])
        if op == "Reshape":
            return self._reshape(ins[0], ins[1])
        return torch.softmax(ins[0], dim=-1)  # Softmax, the last supported op

    @staticmethod
    def _transposed_conv(node: dict, ins: list[torch.Tensor]) -> torch.Tensor:
        """Conv2DBackpropInput(output size (NHWC), filter (kh, kw, out, in), x): a transposed convolution."""
        height, width = (int(v) for v in ins[0].reshape(-1).tolist()[1:3])
        w = ins[1].permute(3, 2, 0, 1).to(ins[2].dtype)
        stride = tuple(_attr_ints(node, "strides")[1:3])
        y = F.conv_transpose2d(ins[2], w, stride=stride)
        top = left = 0
        if _attr_str(node, "padding") == "SAME":
            top = same_padding(height, w.shape[-2], stride[0])[0]
            left = same_padding(width, w.shape[-1], stride[1])[0]
        return y[..., top:top + height, left:left + width]

    @staticmethod
    def _pad(x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Pad(x, paddings): zeros; ``paddings`` is (rank, 2) (before, after) per NHWC axis."""
        pads = paddings.reshape(-1, 2).tolist()
        if x.dim() == 4:  # NHWC pairs onto NCHW axes
            pads = [pads[0], pads[3], pads[1], pads[2]]
        flat = [int(v) for pair in reversed(pads) for v in pair]  # F.pad wants the last axis first
        return F.pad(x, flat)

    @staticmethod
    def _reshape(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        """Reshape(x, shape) in TensorFlow's (NHWC) element order; a 4-D result comes back NCHW."""
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        out = x.reshape([int(v) for v in shape.reshape(-1).tolist()])
        return out.permute(0, 3, 1, 2) if out.dim() == 4 else out

    @staticmethod
    def _max_pool(node: dict, x: torch.Tensor) -> torch.Tensor:
        if _attr_str(node, "data_format") not in ("", "NHWC"):
            raise TfjsFormatError(f"{node['name']}: only NHWC graphs are supported")
        k = tuple(_attr_ints(node, "ksize")[1:3])
        stride = tuple(_attr_ints(node, "strides")[1:3])
        if _attr_str(node, "padding") == "SAME":  # TensorFlow pads with -inf, the odd pixel after
            x = pad_same(x, k, stride, value=float("-inf"))
        return F.max_pool2d(x, k, stride)

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
