"""Run a frozen torch network with ONNX Runtime: exported once, cached, 2.5-4x faster on a CPU.

``veil evaluate`` only runs its recognizers and expression classifier forward, on many crops.
ONNX Runtime does that 2.5x (dlib's ResNet), 4x (faceres) and 2x (expressions) faster than eager
PyTorch on this kind of CPU convnet, with the same outputs to 1e-5: it folds the affine layers
into the convolutions and picks faster kernels. The cloak keeps the torch modules, which it
differentiates through.

The export (torch's TorchScript-based ONNX exporter, batch dimension dynamic) is keyed by a hash
of the network's weights and the crop size, and written atomically under ``$VEIL_HOME/derived``,
so it runs once per machine and a changed network is never served a stale graph. If the export
fails (an op the exporter does not know), :class:`FrozenNet` says so in a warning and runs the
torch module instead: slower, same numbers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from veil.device import onnx_providers
from veil.models.store import veil_home

__all__ = ["FrozenNet"]

_EXPORT_VERSION = 1  # bump when the export below changes, so cached graphs are redone


class _Wrapped(nn.Module):
    # The exporter treats any module with a ``graph`` attribute as a TorchScript module; the
    # wrapper hides the networks' own attribute names from it. It must be in eval mode: the
    # exporter restores the top module's mode afterwards, recursively, onto the network too.
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _weights_hash(net: nn.Module) -> str:
    h = hashlib.sha256(f"veil-onnx/{_EXPORT_VERSION}".encode())
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FrozenNet:
    """A network's forward pass on numpy crops, by ONNX Runtime when the export works.

    Args:
        net: the torch module (in eval mode; it is not changed).
        name: file-name stem of the cached graph.
        size: side of the square crops it takes.
        threads: ONNX Runtime intra-op threads (0: all cores).

    Shape:
        __call__(crops): (B, 3, size, size) float32 -> (B, D) float32
    """

    def __init__(self, net: nn.Module, name: str, size: int, threads: int = 0) -> None:
        self.net = net.eval()
        self.name = name
        self.size = size
        self._session = None
        try:
            path = self._export(veil_home() / "derived" / f"{name}-{size}-{_weights_hash(net)}.onnx")
            self._session = self._open(path, threads)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: run the torch module
            warnings.warn(f"{name}: ONNX export failed ({exc}); running it with PyTorch (slower, same results)",
                          RuntimeWarning, stacklevel=2)

    @property
    def runtime(self) -> str:
        """"onnxruntime" or "torch": what runs the network."""
        return "torch" if self._session is None else "onnxruntime"

    def _export(self, path: Path) -> Path:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(2, 3, self.size, self.size)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on shape checks, harmless here
                torch.onnx.export(_Wrapped(self.net).eval(), (example,), tmp, dynamo=False, input_names=["crops"],
                                  output_names=["out"], dynamic_axes={"crops": {0: "batch"}, "out": {0: "batch"}},
                                  opset_version=17)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @staticmethod
    def _open(path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), opts, providers=onnx_providers())

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.ascontiguousarray(crops, dtype=np.float32)
        if self._session is not None:
            return self._session.run(None, {"crops": crops})[0]
        with torch.inference_mode():
            return self.net(torch.from_numpy(crops)).numpy()
