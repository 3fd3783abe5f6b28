"""Where the networks run: ``--device auto|cpu|cuda[:N]``.

"cpu" (the default) runs every network on the CPU. "cuda[:N]" runs the networks on GPU N:

- the ONNX Runtime networks (the CenterFace detector, and the recognizers and expression networks
  frozen to ONNX by `veil.models.onnx_runtime`) with ONNX Runtime's CUDA provider, which the
  ``veil[gpu]`` extra installs (`onnxruntime-gpu`, in place of `onnxruntime`);
- the torch networks (the cloak's optimisation through its recognizers, MTCNN, the QM-VAE, the
  stream codec, STPrivacy) with a CUDA build of torch.

It is refused with a clear error where neither can reach a GPU; where only one can, the other
half runs on the CPU. "auto" takes GPU 0 where either can, else the CPU.

The device is chosen once per process (`use_device`: the CLI, each batch worker) and read where a
session is opened (`onnx_providers`) or a torch network is placed (`torch_device`), so every
network of a run agrees on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from veil.errors import InputError

__all__ = ["DEVICES", "Device", "parse_device", "use_device", "current_device", "onnx_providers", "torch_device"]

DEVICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    kind: str = "cpu"  # "cpu" or "cuda"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(spec: str) -> tuple[str, int]:
    """("auto" | "cpu" | "cuda", GPU index) of a ``--device`` value; InputError if it is none."""
    match = _SPEC.match(spec.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"--device must be {DEVICES}, got {spec!r}")
    return match.group(1), int(match.group(2) or 0)


def _cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _torch_cuda(index: int = 0) -> bool:
    import torch

    return torch.cuda.is_available() and index < torch.cuda.device_count()


def resolve_device(spec: str) -> Device:
    """The device a ``--device`` value names on this machine (see the module docstring)."""
    kind, index = parse_device(spec)
    if kind == "cpu":
        return Device()
    if kind == "auto":
        return Device("cuda", 0) if _cuda_provider() or _torch_cuda() else Device()
    if not (_cuda_provider() or _torch_cuda(index)):
        raise InputError(f"--device cuda:{index} needs a GPU that ONNX Runtime's CUDA provider (install "
                         "veil[gpu]: onnxruntime-gpu in place of onnxruntime) or a CUDA build of torch can reach")
    return Device("cuda", index)


_current = Device()


def use_device(spec: str | Device) -> Device:
    """Make `spec` the device of the networks this process opens from now on."""
    global _current
    _current = spec if isinstance(spec, Device) else resolve_device(spec)
    return _current


def current_device() -> Device:
    return _current


def onnx_providers() -> list:
    """ONNX Runtime's execution providers for the current device (the CPU kept as the fallback
    for the operators the GPU provider lacks)."""
    if _current.kind == "cuda" and _cuda_provider():  # else only torch reaches the GPU: ONNX Runtime keeps the CPU
        return [("CUDAExecutionProvider", {"device_id": _current.index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def torch_device():  # noqa: ANN201 - a torch.device; torch is imported only when a torch network is placed
    """Where the torch networks run: GPU N of a cuda device where this torch build reaches it, else the CPU."""
    import torch

    if _current.kind == "cuda" and _torch_cuda(_current.index):
        return torch.device("cuda", _current.index)
    return torch.device("cpu")
