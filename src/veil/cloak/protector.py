"""``--method cloak``: Fawkes-style cloaks on video with cloak reuse between frames (the paper's
Algorithm 1, "Efficient Video Privacy Protection Against Malicious Face Recognition Models"), made
to hold against recognizers and pipelines it never saw.

For every tracked face of a frame:

1. its region (the largest crop footprint of the ensemble, with a margin for the attacker's views)
   is taken at *working resolution*: faces larger than dlib's 150x150 chip are downscaled so the
   chip sees them at scale 1, which makes a step cost the same for every face size;
2. the track's target identity is chosen once, from the bank (:mod:`veil.cloak.targets`): the
   real face farthest from the person in every network of the ensemble at once;
3. the cloak starts from the previous frame's cloak of the same track, warped by the least-squares
   affine between the two frames' five key points (Eq. 6) or by the face's translation measured on
   its pixels, whichever carries the previous frame's face closer to this one (`face_motion`: the
   key points jitter more than the face moves), or from random noise on the track's
   first frame, after a scene cut (a new track), after a big landmark jump, or with ``reuse=False``;
4. it is optimised by :func:`~veil.cloak.optimise.optimise_cloak` (Eq. 5 over every recognizer of
   the ensemble, `recognizers`, each normalised by its own threshold, and over random views of the
   face an attacker may take, :mod:`veil.cloak.eot`), upsampled to the frame, added, rounded, and
   scaled down if needed so that DSSIM <= budget on the face box.

Per-frame numbers land in the run's summary (``method_stats``): ``cloak_iterations`` (steps per
frame, all faces), ``cloak_seconds``, per face ``cloak_dssim`` and ``cloak_shift_<recognizer>``
(the written face's descriptor distance from the original, in units of that recognizer's
threshold), and ``cloak_fresh_starts``. A face the cloak cannot handle (too small, at the
frame's edge) is filled black: privacy fails closed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import torch

from veil.align import RECOGNIZER_CROP, CropSpec, alignment_matrices
from veil.cloak.eot import AttackerViews
from veil.cloak.ops import (Region, face_motion, face_region, landmark_jump, region_grey, region_warp, soft_mask,
                            warp_cloak)
from veil.cloak.optimise import CloakConfig, Member, PreviousCloak, fit_budget, optimise_cloak
from veil.cloak.targets import BANK_PHOTOS, TargetBank, choose_target, load_bank
from veil.device import torch_device
from veil.faces import Faces
from veil.models.identity import get_recognizer
from veil.protect.base import ProtectState, ellipse_boxes, register

__all__ = ["Cloak", "MODES", "Mode", "WIDE_VIEWS", "ENSEMBLE", "TrackMemory", "work_scale", "to_work"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mode:
    """How hard a cloak mode works: its DSSIM budget, iteration cap, loss threshold (the ensemble's
    mean feature term in units of each recognizer's match distance) and the attacker views it
    averages over at every step."""

    budget_dssim: float
    max_iters: int
    loss_threshold: float
    views: AttackerViews


WIDE_VIEWS = AttackerViews(samples=4, scale=0.3, rotation_deg=15.0, shift=0.15, point_jitter=0.08)
"""Mode high's attacker views, four a step, with three times the alignment spread of the default
views (scale +-30%, rotation +-15 degrees, shift 15% of the eye distance) and twice the per-point
jitter (8%): an attacker's aligner, crop and network differ from veil's, and a cloak that still
moves veil's networks under these misalignments moves networks it never saw further. In
bench/cloak_transfer.py's leave-one-out rows on single_face.mp4, a cloak optimised without
recognizer R protects this share of the man's faces in his other videos from R: dlib 73%,
faceres 35%, faceres-deep 100%, MobileFaceNet 14% (27%, 3%, 3%, 0% with the default views). Two
thirds of that spread gave 73% and 62% for the first and third, a third more (scale 0.4, 20
degrees) 3% and 0% for the second and fourth. A step costs about twice the default's, and on a
face the ensemble moves less (WolfgangLanger_Pexels.mp4) every frame runs to the iteration cap."""

MODES: dict[str, Mode] = {"low": Mode(0.007, 40, -0.2, AttackerViews()), "mid": Mode(0.0085, 50, -0.3, AttackerViews()),
                          "high": Mode(0.01, 60, -0.4, WIDE_VIEWS)}
"""Fawkes-like modes, stronger and slower from low to high; each number overridable by option. A
fresh start reaches the threshold in about half the cap; a warm start (the previous frame's cloak)
in a few steps. Measured by bench/cloak_transfer.py: every mode holds against dlib's own library
end to end."""

ENSEMBLE = ("dlib", "faceres", "faceres-deep", "mobilefacenet")
"""The recognizers a cloak optimises against by default (``--cloak-recognizers``): every recognizer
veil ships, each with its own crop and threshold (faceres-deep shares faceres' graph, not its
weights: their impostor distances correlate 0.6)."""

FOOTPRINT = CropSpec(RECOGNIZER_CROP.size, 0.45)
"""The region a cloak lives in: dlib's chip (the widest crop of the ensemble) grown by a fifth, so
that an attacker's view, aligned a little differently, still sees cloaked pixels."""


MIN_FACE_PIXELS = 16
"""A face smaller than this has too few pixels to carry a cloak: it is filled black instead."""


@dataclass
class TrackMemory:
    """What one track remembers from its last cloaked frame."""

    frame_index: int
    landmarks: np.ndarray  # (5, 2) frame coordinates
    region: Region
    grey: np.ndarray  # (h, w) float32: the region of the original frame, for `face_motion`
    cloak: np.ndarray  # (h, w, 3) float32 grey levels, frame resolution, as written
    descriptors: dict[str, np.ndarray]  # each recognizer's (D,) descriptor of the protected face
    target: int  # the track's target identity: a row of the bank


def work_scale(landmarks: np.ndarray) -> float:
    """Scale that brings a face to the recognizer crop's resolution (never enlarges)."""
    m = alignment_matrices(landmarks[None], RECOGNIZER_CROP)[0]
    return float(min(1.0, np.sqrt(abs(np.linalg.det(m[:, :2])))))


def to_work(pixels: np.ndarray, region: Region, landmarks: np.ndarray,
            scale: float) -> tuple[np.ndarray, Region, np.ndarray]:
    """A region's pixels, face box and key points at working resolution (pixel centres kept).

    Shape:
        pixels: (h, w, 3) uint8, landmarks: (5, 2) frame -> (h', w', 3), Region, (5, 2) work coords
    """
    h, w = region.shape
    local = np.asarray(landmarks, np.float64) - region.origin
    if scale >= 1.0:
        return pixels, Region(0, 0, w, h, region.face), local
    ws, hs = max(16, int(round(w * scale))), max(16, int(round(h * scale)))
    sx, sy = ws / w, hs / h
    small = cv2.resize(pixels, (ws, hs), interpolation=cv2.INTER_AREA)
    fx0, fy0, fx1, fy1 = region.face
    face = (int(np.floor(fx0 * sx)), int(np.floor(fy0 * sy)), min(ws, int(np.ceil(fx1 * sx))),
            min(hs, int(np.ceil(fy1 * sy))))
    if face[2] - face[0] < 11 or face[3] - face[1] < 11:
        face = (0, 0, ws, hs)
    pts = (local + 0.5) * np.array([sx, sy]) - 0.5
    return small, Region(0, 0, ws, hs, face), pts


def _fill_black(frame: np.ndarray, faces: Faces, mask_scale: float) -> None:
    for x1, y1, x2, y2 in ellipse_boxes(faces, mask_scale):
        centre = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
        axes = (max(1, int(np.ceil((x2 - x1) / 2))), max(1, int(np.ceil((y2 - y1) / 2))))
        cv2.ellipse(frame, centre, axes, 0, 0, 360, (0, 0, 0), thickness=-1)


@register("cloak")
@dataclass
class Cloak:
    """Adversarial cloak against face recognition, reused between frames (see module docstring).

    Options: ``mode`` (low, mid, high: a larger budget and a stronger cloak; mid by default: low
    held against dlib's own library but left 8-11% of one clip's faces to two of the four
    recognizers in bench/cloak_transfer.py, and its small budget takes more steps, not fewer; high
    transfers furthest to networks left out of the ensemble and may run every frame to its cap),
    ``budget_dssim``, ``max_iters``, ``loss_threshold`` (override the mode's), ``recognizers`` (the
    ensemble, comma-separated: `ENSEMBLE` by default), ``views`` (attacker views per step, the
    mode's by default; 1: only veil's own view, as the paper), ``reuse`` (start from the previous
    frame's cloak), ``optimizer``, ``lr``, ``targets_dir`` (photos of other people to add to the
    target bank).
    """

    mode: str = "mid"
    budget_dssim: float | None = None  # default: the mode's
    max_iters: int | None = None  # default: the mode's
    loss_threshold: float | None = None  # default: the mode's
    recognizers: str | tuple[str, ...] = ENSEMBLE
    views: int | None = None  # default: the mode's
    reuse: bool = True
    optimizer: str = "adam"
    lr: float | None = None
    targets_dir: str | None = None
    max_jump: float = 0.3  # landmark_jump above which the previous cloak is not reused
    mask_scale: float = 1.2
    temporal: bool = True  # the adjacent-frame terms of Eq. (5)
    faces_only = True  # a cloak is aimed at face recognition, through the face's landmarks
    _banks: dict[str, TargetBank] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        names = self.recognizers.split(",") if isinstance(self.recognizers, str) else self.recognizers
        self.recognizers = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
        if not self.recognizers:
            raise ValueError("recognizers must name at least one recognizer")
        mode = MODES[self.mode]
        self.config = CloakConfig(
            budget_dssim=float(self.budget_dssim) if self.budget_dssim is not None else mode.budget_dssim,
            max_iters=int(self.max_iters) if self.max_iters is not None else mode.max_iters,
            loss_threshold=float(self.loss_threshold) if self.loss_threshold is not None else mode.loss_threshold,
            optimizer=str(self.optimizer),
            lr=float(self.lr) if self.lr is not None else None,
            temporal_feature_weight=CloakConfig.temporal_feature_weight if self.temporal else 0.0,
            temporal_ssim_weight=CloakConfig.temporal_ssim_weight if self.temporal else 0.0,
            views=mode.views if self.views is None else replace(mode.views, samples=int(self.views)))
        if self.mask_scale <= 0:
            raise ValueError(f"mask_scale must be positive, got {self.mask_scale}")
        self.ensemble = [get_recognizer(n) for n in self.recognizers]  # unknown names fail here, not mid-video
        self.device = torch_device()
        for model in self.ensemble:
            model.net.to(self.device)

    @property
    def banks(self) -> dict[str, TargetBank]:
        """Each recognizer's descriptors of the same bank of other people's faces, row for row."""
        if self._banks is None:
            banks = {m.name: load_bank(m, BANK_PHOTOS, self.targets_dir) for m in self.ensemble}
            if len({b.sources for b in banks.values()}) != 1:
                raise RuntimeError("the target bank differs between recognizers; clear $VEIL_HOME/cloak_targets")
            self._banks = banks
        return self._banks

    def describe(self, frame: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        """Each recognizer's descriptors as an attacker computes them (OpenCV crop of the uint8
        frame). Shape: (N, 5, 2) -> {name: (N, D)}."""
        return {m.name: m.describe_exact(frame, landmarks) for m in self.ensemble}

    def __call__(self, frame: np.ndarray, faces: Faces, state: ProtectState) -> np.ndarray:
        out = frame.copy()
        tracks: dict[int, TrackMemory] = state.memory.setdefault("cloak_tracks", {})
        steps_total, start = 0, time.perf_counter()
        for i in range(len(faces)):
            try:
                steps = self._cloak_face(frame, out, faces[i], state, tracks)
            except ValueError as exc:
                log.warning("frame %d: face %d filled black, no cloak possible (%s)", state.frame_index, i, exc)
                _fill_black(out, faces[i], self.mask_scale)
                state.stats.setdefault("cloak_faces_masked", []).append(state.frame_index)
                continue
            steps_total += steps
        # tracks gone for more than two frames are never reused: drop their cloaks
        for gone in [t for t, m in tracks.items() if m.frame_index < state.frame_index - 2]:
            del tracks[gone]
        state.stats.setdefault("cloak_iterations", []).append(steps_total)
        state.stats.setdefault("cloak_seconds", []).append(round(time.perf_counter() - start, 4))
        log.info("frame %d: %d cloak iterations", state.frame_index, steps_total)
        return out

    def _cloak_face(self, frame: np.ndarray, out: np.ndarray, face: Faces, state: ProtectState,
                    tracks: dict[int, TrackMemory]) -> int:
        """Cloak one face of ``frame`` into ``out``; returns the optimisation steps taken."""
        if float(face.sizes[0]) < MIN_FACE_PIXELS:
            raise ValueError(f"a face of {float(face.sizes[0]):.0f} pixels is too small to cloak")
        lm = face.landmarks[0].astype(np.float64)
        track = int(face.track_ids[0])
        region = face_region(lm, face.boxes[0], frame.shape, spec=FOOTPRINT, mask_scale=self.mask_scale)
        pixels = frame[region.y0:region.y1, region.x0:region.x1]
        originals = {n: d[0] for n, d in self.describe(frame, lm[None]).items()}
        memory = tracks.get(track) if track >= 0 else None
        target = memory.target if memory is not None else \
            choose_target(originals, self.banks, {m.name: m.threshold for m in self.ensemble})
        members = [Member(m.name, m.net, m.crop, m.threshold, originals[m.name], self.banks[m.name].descriptors[target])
                   for m in self.ensemble]

        # Algorithm 1, lines 5-9: the previous cloak warped by the face's move (Eq. 6, or its pixels')
        warped = None
        if memory is not None and state.frame_index - memory.frame_index <= 2 \
                and landmark_jump(memory.landmarks, lm) <= self.max_jump:
            now = region_grey(frame, memory.region)
            motion = face_motion(memory.landmarks, lm, memory.grey, now, memory.region)
            warped = warp_cloak(memory.cloak, region_warp(motion, memory.region, region), region.shape)

        scale = work_scale(lm)
        small, work, work_lm = to_work(pixels, region, lm, scale)
        size = (work.shape[1], work.shape[0])
        warped_small = None if warped is None else \
            cv2.resize(warped, size, interpolation=cv2.INTER_AREA).reshape(work.shape[0], work.shape[1], 3)
        previous = None
        if warped_small is not None and self.config.temporal_ssim_weight + self.config.temporal_feature_weight > 0:
            previous = PreviousCloak(warped_small, memory.descriptors)
        init = warped_small if (self.reuse and warped_small is not None) else None
        if init is None:
            state.stats.setdefault("cloak_fresh_starts", []).append(state.frame_index)
        gen = torch.Generator().manual_seed(state.seed * 1_000_003 + state.frame_index * 7919 + max(track, 0))
        result = optimise_cloak(small, work, work_lm, soft_mask(work), members, self.config, init=init,
                                previous=previous, generator=gen, device=self.device)

        cloak = result.cloak if scale >= 1.0 else \
            cv2.resize(result.cloak, (region.shape[1], region.shape[0]), interpolation=cv2.INTER_LINEAR)
        protected, final_dssim, used = fit_budget(pixels, cloak.reshape(*region.shape, 3), region,
                                                  self.config.budget_dssim)
        out[region.y0:region.y1, region.x0:region.x1] = protected
        # the written pixels decide the descriptors (an attacker sees the uint8 frame)
        written = {n: d[0] for n, d in self.describe(out, lm[None]).items()}
        if track >= 0:
            tracks[track] = TrackMemory(state.frame_index, lm, region, region_grey(frame, region),
                                        (cloak * used).reshape(*region.shape, 3), written, target)
        state.stats.setdefault("cloak_dssim", []).append(round(final_dssim, 5))
        state.stats.setdefault("cloak_feature_loss", []).append(round(float(np.mean(list(result.feature_loss.values()))), 4))
        for m in self.ensemble:
            shift = float(np.linalg.norm(written[m.name] - originals[m.name])) / m.threshold
            state.stats.setdefault(f"cloak_shift_{m.name}", []).append(round(shift, 4))
        return result.iterations
