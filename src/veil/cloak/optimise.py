"""One face's cloak, optimised by gradient steps (the paper's Eq. 5 and Algorithm 1, lines 10-12).

The cloak ``delta`` lives on the face's :class:`~veil.cloak.ops.Region` of the frame, in
grey levels, scaled by a feathered mask. Each step crops the protected region with the
differentiable alignment (``veil.align.align_crop``) at the recognizer's 150x150 resolution, runs
the recognizer, and descends

    L = |F(x') - F(t)| - |F(x') - F(x)|                       feature terms (Eq. 5's L_f, Fawkes' target t)
        + lam * max(DSSIM(x, x') - rho, 0)                     visual budget (Eq. 5's L_s)
        + lam1 * |F(x') - F(x'_p)|                             adjacent frames: features (Eq. 5, lambda_1)
        + lam2 * max(DSSIM(x', x + delta_p) - rho / 2, 0)      adjacent frames: the cloak's change (lambda_2)

with ``x'`` = x + mask * delta, ``x'_p`` the previous protected face and ``delta_p`` the previous
cloak warped to this frame. It stops when the feature terms |F(x') - F(t)| - |F(x') - F(x)| fall to ``loss_threshold`` with
DSSIM within the budget (Algorithm 1's "while loss >= threshold"), or after ``max_iters`` steps.
:func:`fit_budget` then scales the cloak down if it still exceeds the budget, so DSSIM <= budget
always holds for the uint8 pixels written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from veil.align import RECOGNIZER_CROP, align_crop
from veil.cloak.ops import Region, dssim

__all__ = ["CloakConfig", "CloakResult", "PreviousCloak", "optimise_cloak", "fit_budget"]


@dataclass(frozen=True)
class CloakConfig:
    """How hard one face is cloaked (see the module docstring for the loss)."""

    budget_dssim: float = 0.007  # rho: DSSIM(x, x') may not exceed it
    max_iters: int = 40  # the paper's cap
    loss_threshold: float = -0.5  # stop once |F(x') - F(t)| - |F(x') - F(x)| is at most this
    optimizer: str = "adadelta"  # the paper's; or "adam"
    lr: float | None = None  # None: 3e4 for Adadelta, 2.0 for Adam (cloak in grey levels)
    budget_weight: float = 200.0  # lam
    temporal_feature_weight: float = 0.1  # lam1
    temporal_ssim_weight: float = 50.0  # lam2
    init_grey_levels: float = 2.0  # random initialisation: uniform in +-this

    def __post_init__(self) -> None:
        if not 0 < self.budget_dssim < 0.5:
            raise ValueError(f"budget_dssim must be in (0, 0.5), got {self.budget_dssim}")
        if self.max_iters < 0:
            raise ValueError(f"max_iters must be >= 0, got {self.max_iters}")
        if self.optimizer not in ("adadelta", "adam"):
            raise ValueError(f"optimizer must be 'adadelta' or 'adam', got {self.optimizer!r}")

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        # The cloak's pixel gradients are far below Adadelta's eps (1e-6), where its step is
        # ~ lr * gradient: a large lr; Adam's step is ~ lr grey levels per pixel.
        return 3e4 if self.optimizer == "adadelta" else 2.0


@dataclass(frozen=True)
class PreviousCloak:
    """What the adjacent-frame terms need from the previous frame of the same track."""

    cloak: np.ndarray  # (h, w, 3) float32 grey levels, already warped into this frame's region
    descriptor: np.ndarray  # (D,) the previous protected face's descriptor


@dataclass(frozen=True)
class CloakResult:
    """The optimised cloak of one face, at the resolution it was optimised at.

    Shape:
        cloak: (h, w, 3) float32 grey levels, mask applied
    """

    cloak: np.ndarray
    iterations: int  # gradient steps taken
    dssim: float  # at the last step, before rounding
    shift: float  # |F(x') - F(x)| at the last step
    feature_loss: float  # |F(x') - F(t)| - |F(x') - F(x)| at the last step, compared to the threshold
    reached: bool  # the loss threshold was met before max_iters


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1).unsqueeze(0)


def _face(t: torch.Tensor, region: Region) -> torch.Tensor:
    fx0, fy0, fx1, fy1 = region.face
    return t[..., fy0:fy1, fx0:fx1]


def fit_budget(region_pixels: np.ndarray, cloak: np.ndarray, region: Region, budget: float,
               steps: int = 12) -> tuple[np.ndarray, float, float]:
    """Add the cloak and round to uint8; if DSSIM then exceeds the budget, scale the cloak down
    (bisection) until it fits. Returns the protected pixels, their DSSIM and the scale used.

    Shape:
        region_pixels: (h, w, 3) uint8, cloak: (h, w, 3) grey levels -> (h, w, 3) uint8, float, float
    """
    x = _chw(region_pixels)
    c = _chw(cloak)
    x_face = _face(x, region)

    def rounded(scale: float) -> tuple[torch.Tensor, float]:
        out = torch.clamp(torch.round(x + scale * c), 0, 255)
        return out, float(dssim(_face(out, region), x_face)[0])

    with torch.no_grad():
        out, d = rounded(1.0)
        scale = 1.0
        if d > budget:
            lo, hi = 0.0, 1.0
            (out, d), scale = rounded(0.0), 0.0
            for _ in range(steps):
                mid = (lo + hi) / 2
                cand = rounded(mid)
                if cand[1] <= budget:
                    lo, (out, d), scale = mid, cand, mid
                else:
                    hi = mid
    return out[0].permute(1, 2, 0).numpy().astype(np.uint8), d, scale


def optimise_cloak(net: nn.Module, region_pixels: np.ndarray, region: Region, landmarks: np.ndarray,
                   mask: np.ndarray, original: np.ndarray, target: np.ndarray, config: CloakConfig,
                   init: np.ndarray | None = None, previous: PreviousCloak | None = None,
                   generator: torch.Generator | None = None) -> CloakResult:
    """Optimise one face's cloak; ``init`` (a warped previous cloak) or random initialisation.

    Shape:
        region_pixels: (h, w, 3) uint8, landmarks: (5, 2) region coordinates, mask: (h, w) 0..1,
        original/target: (D,) descriptors, init: (h, w, 3) grey levels or None -> CloakResult
    """
    x = _chw(region_pixels)
    m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    lm = torch.from_numpy(np.asarray(landmarks, np.float32))[None]
    f0 = torch.from_numpy(original)[None]
    ft = torch.from_numpy(target)[None]
    if init is None:
        # the paper's baseline: a random pixel matrix the size of the face
        start = (torch.rand(x.shape, generator=generator) * 2 - 1) * config.init_grey_levels
    else:
        start = _chw(init)
    delta = start.clone().requires_grad_(True)
    opt: torch.optim.Optimizer
    if config.optimizer == "adadelta":
        opt = torch.optim.Adadelta([delta], lr=config.learning_rate)
    else:
        opt = torch.optim.Adam([delta], lr=config.learning_rate)
    prev_cloak = _chw(previous.cloak) if previous is not None else None
    prev_desc = torch.from_numpy(previous.descriptor)[None] if previous is not None else None
    x_face = _face(x, region)

    steps, reached = 0, False
    while True:
        protected = torch.clamp(x + m * delta, 0.0, 255.0)
        feat = net(align_crop(protected[0], lm, RECOGNIZER_CROP))
        shift = torch.linalg.vector_norm(feat - f0, dim=-1)
        feature_loss = torch.linalg.vector_norm(feat - ft, dim=-1) - shift  # Eq. (5)'s L_f with Fawkes' target
        d = dssim(_face(protected, region), x_face)
        if float(feature_loss.detach()) <= config.loss_threshold and float(d.detach()) <= config.budget_dssim:
            reached = True
            break
        if steps >= config.max_iters:
            break
        # Eq. (5): feature distance terms, then the DSSIM budget penalty
        loss = feature_loss + config.budget_weight * torch.relu(d - config.budget_dssim)
        if prev_cloak is not None and prev_desc is not None:
            loss = loss + config.temporal_feature_weight * torch.linalg.vector_norm(feat - prev_desc, dim=-1)
            still = _face(torch.clamp(x + m * prev_cloak, 0.0, 255.0), region)
            loss = loss + config.temporal_ssim_weight * torch.relu(
                dssim(_face(protected, region), still) - config.budget_dssim / 2)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        steps += 1

    cloak = (m * delta.detach())[0].permute(1, 2, 0).numpy().copy()
    return CloakResult(cloak=cloak, iterations=steps, dssim=float(d.detach()), shift=float(shift.detach()),
                       feature_loss=float(feature_loss.detach()), reached=reached)
