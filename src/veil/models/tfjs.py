"""Read TensorFlow.js models: weight manifests, binary shards and (small) graph models.

A tfjs model is a JSON file plus one or more ``.bin`` shards. The JSON's weights manifest is a
list of groups; each group names its shard files and its weights in order, each with ``name``,
``shape``, ``dtype`` and, when stored quantised, ``quantization`` (``uint8``/``uint16``:
value = q * scale + min; ``float16``: half floats). Weights are packed back to back across the
concatenated shards, so the sum of their sizes must equal the shards' bytes exactly.

Layouts differ from PyTorch: convolution filters are ``[kh, kw, in, out]`` (torch wants
``[out, in, kh, kw]``), depthwise filters ``[kh, kw, C, multiplier]``, and TensorFlow's "same"
padding puts the odd extra pixel at the bottom/right. The helpers below convert.

A *graph model* (``format: graph-model``) also carries a TensorFlow GraphDef;
:func:`load_graph_model` reads it and :class:`veil.models.tfjs_graph.GraphModule` executes it.

Usage::

    >>> from veil.models.tfjs import load_weights_manifest
    >>> weights = load_weights_manifest(path_to_manifest_json)   # doctest: +SKIP
    >>> weights["conv32_down/conv/filters"].shape                # doctest: +SKIP
    (7, 7, 3, 32)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
    out = (size + stride - 1) // stride  # ceil; not -(-size // stride): traced to ONNX, // truncates
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor with ``value`` so that a "valid" conv/pool acts like TensorFlow's "same"
    (zeros for a convolution, -inf for a max-pool).

    Shape:
        x: (B, C, H, W) -> (B, C, H + ph, W + pw)
    """
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)
