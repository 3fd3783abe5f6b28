"""Where the networks run: ``--device auto|cpu|cuda[:N]``.

"cpu" (the default) runs every network on the CPU. "cuda[:N]" runs the ONNX Runtime networks
(the CenterFace detector, and the recognizers and expression networks frozen to ONNX by
`veil.models.onnx_runtime`) on GPU N with ONNX Runtime's CUDA provider, which the ``veil[gpu]``
extra installs (`onnxruntime-gpu`, in place of `onnxruntime`); it is refused with a clear error
where that provider or the GPU is missing. "auto" takes GPU 0 where the provider is there, else
the CPU. The torch networks (the cloak's optimisation, the QM-VAE and stream models, STPrivacy)
run on the CPU whatever the device.

The device is chosen once per process (`use_device`: the CLI, each batch worker) and read where a
session is opened (`onnx_providers`), so every network of a run agrees on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from veil.errors import InputError

__all__ = ["DEVICES", "Device", "parse_device", "use_device", "current_device", "onnx_providers"]

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


def resolve_device(spec: str) -> Device:
    """The device a ``--device`` value names on this machine (see the module docstring)."""
    kind, index = parse_device(spec)
    if kind == "cpu":
        return Device()
    if kind == "auto":
        return Device("cuda", 0) if _cuda_provider() else Device()
    if not _cuda_provider():
        raise InputError("--device cuda needs ONNX Runtime's CUDA provider: install veil[gpu] "
                         "(onnxruntime-gpu in place of onnxruntime) on a machine with an NVIDIA GPU")
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
    if _current.kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": _current.index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
