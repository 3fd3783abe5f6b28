"""MTCNN (Zhang et al. 2016): the seed paper's face and key-point detector.

The classic three-stage cascade: P-Net proposes windows on an image pyramid, R-Net and O-Net
refine them on 24x24 and 48x48 crops; O-Net also gives the five landmarks. Written here on
numpy boxes + torch nets because the reference implementation (facenet-pytorch) cannot be
installed beside a current torch. Frames of a batch share the pyramid passes.

Memory layouts, for speed only (boxes and landmarks move by under 0.001 px): the frames are
resampled as contiguous N x C x H x W tensors (torch's area resampling is 1.5x slower on the
channels-last view of a decoded frame) and the nets read channels-last inputs (their max-pooling
3x faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from veil.detect.base import DETECT_SIZE, fit_size, nms
from veil.device import torch_device
from veil.faces import Faces
from veil.models.mtcnn import load_mtcnn

__all__ = ["MTCNN"]


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centre (side = the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression (offsets in units of the box's size)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def _net_input(images: torch.Tensor) -> torch.Tensor:
    """Pixel values as MTCNN expects them, laid out channels-last for the nets."""
    return ((images - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)


def _crops(images: torch.Tensor, inds: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Crop each box (clipped to its frame) and resize to size x size, normalised as MTCNN expects."""
    _, _, h, w = images.shape
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x1, y1 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    out = torch.zeros((len(boxes), 3, size, size), device=images.device)
    for k in range(len(boxes)):
        if x2[k] > x1[k] - 1 and y2[k] > y1[k] - 1:
            crop = images[inds[k], :, y1[k] - 1:y2[k], x1[k] - 1:x2[k]].unsqueeze(0)
            out[k] = F.interpolate(crop, size=(size, size), mode="area")[0]
    return _net_input(out)


class MTCNN:
    """MTCNN face + landmark detector.

    Args:
        min_face: smallest face searched for, in pixels of the detection image.
        thresholds: P/R/O-Net face-probability thresholds.
        factor: pyramid scale step.
        detect_size: longest side of the detection image (None: full size).
        threshold: if given, replaces the last (O-Net) threshold, for a uniform ``--threshold``.
        threads: torch's CPU threads (0: leave torch's setting); torch has one setting per process.
    """

    name = "mtcnn"

    def __init__(self, min_face: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, detect_size: int | None = DETECT_SIZE, threshold: float | None = None,
                 threads: int = 0) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.min_face = min_face
        self.thresholds = (thresholds[0], thresholds[1], threshold if threshold is not None else thresholds[2])
        self.factor = factor
        self.detect_size = detect_size
        self.device = torch_device()
        self.pnet, self.rnet, self.onet = (net.to(self.device) for net in load_mtcnn())

    def detect(self, image: np.ndarray) -> Faces:
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Faces]:
        if len(images) == 0:
            return []
        h0, w0 = images[0].shape[:2]
        w, h, scale = fit_size(w0, h0, self.detect_size)
        batch = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().contiguous()
        if scale != 1.0:
            batch = F.interpolate(batch, size=(h, w), mode="area")
        boxes, inds = self._propose(batch)
        boxes, inds = self._refine(batch, boxes, inds)
        boxes, points, inds = self._output(batch, boxes, inds)
        out = []
        for i in range(len(images)):
            sel = inds == i
            faces = Faces(boxes[sel, :4], points[sel], boxes[sel, 4]).scaled(1.0 / scale)
            out.append(faces.clipped(w0, h0))
        return out

    def _propose(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        _, _, h, w = batch.shape
        m = 12.0 / self.min_face
        scales, side = [], min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        all_boxes, all_inds = [], []
        for s in scales:
            data = F.interpolate(batch, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            reg, prob = self.pnet(_net_input(data))
            mask = prob[:, 1] >= self.thresholds[0]
            idx = mask.nonzero().cpu().numpy()
            if len(idx) == 0:
                continue
            score = prob[:, 1][mask].cpu().numpy()
            r = reg.permute(0, 2, 3, 1)[mask].cpu().numpy()
            yx = idx[:, 1:].astype(np.float32)
            # Each P-Net output cell is a 12x12 window with stride 2 at this scale.
            q1 = np.floor((2 * yx[:, ::-1] + 1) / s)
            q2 = np.floor((2 * yx[:, ::-1] + 12) / s)
            b = np.concatenate([q1, q2, score[:, None], r], axis=1)
            keep = np.concatenate([np.nonzero(idx[:, 0] == i)[0][nms(b[idx[:, 0] == i, :4], b[idx[:, 0] == i, 4], 0.5)]
                                   for i in np.unique(idx[:, 0])])
            all_boxes.append(b[keep])
            all_inds.append(idx[keep, 0])
        if not all_boxes:
            return np.zeros((0, 9), np.float32), np.zeros(0, np.int64)
        boxes, inds = np.concatenate(all_boxes), np.concatenate(all_inds)
        keep = _batched_nms(boxes, inds, 0.7)
        boxes, inds = boxes[keep], inds[keep]
        refined = _regress(boxes[:, :4], boxes[:, 5:9])
        return _square(np.concatenate([refined, boxes[:, 4:5]], axis=1)), inds

    def _refine(self, batch: torch.Tensor, boxes: np.ndarray, inds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(boxes) == 0:
            return boxes, inds
        reg, prob = self.rnet(_crops(batch, inds, boxes, 24))
        score = prob[:, 1].cpu().numpy()
        ok = score > self.thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        inds, reg = inds[ok], reg.cpu().numpy()[ok]
        keep = _batched_nms(boxes, inds, 0.7)
        boxes = _regress(boxes[keep], reg[keep])
        return _square(boxes), inds[keep]

    def _output(self, batch: torch.Tensor, boxes: np.ndarray,
                inds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32), inds
        reg, lms, prob = self.onet(_crops(batch, inds, boxes, 48))
        score = prob[:, 1].cpu().numpy()
        ok = score > self.thresholds[2]
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        inds, reg, lms = inds[ok], reg.cpu().numpy()[ok], lms.cpu().numpy()[ok]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = np.stack([w * lms[:, :5] + boxes[:, 0:1] - 1, h * lms[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = _regress(boxes, reg)
        keep = _batched_nms(boxes, inds, 0.7, mode="min")
        return boxes[keep], points[keep], inds[keep]


def _batched_nms(boxes: np.ndarray, inds: np.ndarray, iou: float, mode: str = "union") -> np.ndarray:
    """NMS within each frame of a batch; returns indices into `boxes`."""
    keep = [np.nonzero(inds == i)[0][nms(boxes[inds == i, :4], boxes[inds == i, 4], iou, mode)]
            for i in np.unique(inds)]
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)
