"""One face's cloak, optimised by gradient steps (the paper's Eq. 5 and Algorithm 1, lines 10-12),
against an ensemble of recognizers and over the views an attacker may take (`veil.cloak.eot`).

The cloak ``delta`` lives on the face's :class:`~veil.cloak.ops.Region` of the frame, in grey
levels, scaled by a feathered mask. Each step takes `AttackerViews.samples` views of the protected
region (the first exactly as written and aligned, the others degraded and aligned differently),
crops each with every member's own alignment (``veil.align.align_crop``, differentiable) and
descends

    L = mean_r mean_views ( |F_r(x') - t_r| - |F_r(x') - F_r(x)| ) / tau_r    Eq. 5's L_f per network r
        + lam * max(DSSIM(x, x') - rho, 0)                                   visual budget (Eq. 5's L_s)
        + lam1 * mean_r |F_r(x') - F_r(x'_p)| / tau_r                         adjacent frames: features
        + lam2 * max(DSSIM(x', x + delta_p) - rho / 2, 0)                     adjacent frames: the cloak

with ``x'`` = x + mask * delta, ``t_r`` the target identity's descriptor in network r's space,
``tau_r`` network r's same-person threshold (so that no network dominates: 1 is its own match
distance), ``x'_p`` the previous protected face and ``delta_p`` the previous cloak warped to this
frame. It stops when the networks' mean feature term is at most ``loss_threshold`` (in units of
their thresholds) with DSSIM within the budget (Algorithm 1's "while loss >= threshold"), or after
``max_iters`` steps. :func:`fit_budget` then scales the cloak to the largest size within the budget,
so DSSIM <= budget always holds for the uint8 pixels written, and the budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from veil.align import CropSpec, align_crop
from veil.cloak.eot import AttackerViews, attacker_view
from veil.cloak.ops import Region, dssim

__all__ = ["CloakConfig", "CloakResult", "Member", "PreviousCloak", "optimise_cloak", "fit_budget"]


@dataclass(frozen=True)
class CloakConfig:
    """How hard one face is cloaked (see the module docstring for the loss)."""

    budget_dssim: float = 0.007  # rho: DSSIM(x, x') may not exceed it
    max_iters: int = 40  # the paper's cap
    loss_threshold: float = -0.3  # stop once the networks' mean feature term is at most this (threshold units)
    optimizer: str = "adam"  # or the paper's "adadelta"
    lr: float | None = None  # None: 2.0 for Adam, 3e4 for Adadelta (cloak in grey levels)
    budget_weight: float = 200.0  # lam
    temporal_feature_weight: float = 0.1  # lam1
    temporal_ssim_weight: float = 50.0  # lam2
    init_grey_levels: float = 2.0  # random initialisation: uniform in +-this
    warm_lr: float = 0.25  # a warm start (the previous frame's cloak) is refined at this share of the rate
    views: AttackerViews = field(default_factory=AttackerViews)

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
        # Adam's step is ~ lr grey levels per pixel. The cloak's pixel gradients are far below
        # Adadelta's eps (1e-6), where its step is ~ lr * gradient: a large lr.
        return 2.0 if self.optimizer == "adam" else 3e4


@dataclass(frozen=True)
class Member:
    """One recognizer of the ensemble, with what the optimisation needs of the face being cloaked.

    Shape:
        original, target: (D,) the face's and the target identity's descriptors in its space
    """

    name: str
    net: nn.Module
    crop: CropSpec
    threshold: float
    original: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class PreviousCloak:
    """What the adjacent-frame terms need from the previous frame of the same track."""

    cloak: np.ndarray  # (h, w, 3) float32 grey levels, already warped into this frame's region
    descriptors: dict[str, np.ndarray]  # each member's (D,) descriptor of the previous protected face


@dataclass(frozen=True)
class CloakResult:
    """The optimised cloak of one face, at the resolution it was optimised at.

    Shape:
        cloak: (h, w, 3) float32 grey levels, mask applied
    """

    cloak: np.ndarray
    iterations: int  # gradient steps taken
    dssim: float  # at the last step, before rounding
    feature_loss: dict[str, float]  # each member's feature term at the last step, threshold units
    reached: bool  # the loss threshold was met before max_iters


def _chw(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1).unsqueeze(0).to(device)


def _face(t: torch.Tensor, region: Region) -> torch.Tensor:
    fx0, fy0, fx1, fy1 = region.face
    return t[..., fy0:fy1, fx0:fx1]


def fit_budget(region_pixels: np.ndarray, cloak: np.ndarray, region: Region, budget: float,
               steps: int = 12, most: float = 2.0) -> tuple[np.ndarray, float, float]:
    """Add the cloak, scaled as large as the budget allows, and round to uint8. Returns the
    protected pixels, their DSSIM and the scale used.

    The optimisation works at a reduced resolution and under a penalty, so the cloak it hands over
    usually sits below the budget once upsampled and rounded (DSSIM ~0.75 of it), or above it: the
    largest scale in [0, `most`] whose rounded pixels keep DSSIM <= budget is found by bisection
    (DSSIM grows with the scale), so the cloak spends its whole budget and never more.

    Shape:
        region_pixels: (h, w, 3) uint8, cloak: (h, w, 3) grey levels -> (h, w, 3) uint8, float, float
    """
    x = _chw(region_pixels)
    c = _chw(cloak)
    x_face = _face(x, region)
    tried: dict[float, tuple[torch.Tensor, float]] = {}

    def rounded(scale: float) -> tuple[torch.Tensor, float]:
        if scale not in tried:
            out = torch.clamp(torch.round(x + scale * c), 0, 255)
            tried[scale] = out, float(dssim(_face(out, region), x_face)[0])
        return tried[scale]

    with torch.no_grad():
        scale = _largest_scale(lambda s: rounded(s)[1] <= budget, most, steps)
        out, d = rounded(scale)
    return out[0].permute(1, 2, 0).numpy().astype(np.uint8), d, scale


def _largest_scale(fits: Callable[[float], bool], most: float, steps: int) -> float:
    """The largest scale in [0, `most`] that `fits` (DSSIM within the budget: it grows with the
    scale), by bisection after trying 1 (the cloak as it is) and `most`; 0 where nothing fits."""
    lo, hi = 0.0, most
    for scale in dict.fromkeys((1.0, most)):
        if not fits(scale):
            hi = scale
            break
        lo = scale
    for _ in range(steps if lo < hi else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _within_budget(x: torch.Tensor, cloak: torch.Tensor, region: Region, budget: float, steps: int = 8) -> torch.Tensor:
    """`cloak` scaled down (bisection) until DSSIM(x, x + cloak) on the face is within `budget`.
    Shape: (1, 3, h, w) -> the same."""
    x_face = _face(x, region)

    def fits(scale: float) -> bool:
        return float(dssim(_face(torch.clamp(x + scale * cloak, 0, 255), region), x_face)[0]) <= budget

    with torch.no_grad():
        return _largest_scale(fits, 1.0, steps) * cloak


def optimise_cloak(region_pixels: np.ndarray, region: Region, landmarks: np.ndarray, mask: np.ndarray,
                   members: list[Member], config: CloakConfig, init: np.ndarray | None = None,
                   previous: PreviousCloak | None = None, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> CloakResult:
    """Optimise one face's cloak against `members`; ``init`` (a warped previous cloak) or random.

    Shape:
        region_pixels: (h, w, 3) uint8, landmarks: (5, 2) region coordinates, mask: (h, w) 0..1,
        init: (h, w, 3) grey levels or None -> CloakResult
    """
    if not members:
        raise ValueError("a cloak needs at least one recognizer to optimise against")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    x = _chw(region_pixels, device)
    m = torch.from_numpy(np.asarray(mask, np.float32))[None, None].to(device)
    points = torch.from_numpy(np.asarray(landmarks, np.float32)).to(device)
    originals = {r.name: torch.from_numpy(r.original)[None].to(device) for r in members}
    targets = {r.name: torch.from_numpy(r.target)[None].to(device) for r in members}
    x_face = _face(x, region)
    lr = config.learning_rate
    if init is None:
        # the paper's baseline: a random pixel matrix the size of the face
        start = ((torch.rand(x.shape, generator=generator) * 2 - 1) * config.init_grey_levels).to(device)
    else:
        # The warped cloak, shrunk where this frame's face takes less of it within the budget; then
        # refined with smaller steps: a fresh optimiser's first steps are full-size everywhere.
        start = _within_budget(x, m * _chw(init, device), region, config.budget_dssim) / m.clamp(min=1e-3)
        start = start * (m > 1e-3)
        lr *= config.warm_lr
    delta = start.clone().requires_grad_(True)
    opt: torch.optim.Optimizer
    if config.optimizer == "adadelta":
        opt = torch.optim.Adadelta([delta], lr=lr)
    else:
        opt = torch.optim.Adam([delta], lr=lr)
    still = _face(torch.clamp(x + m * _chw(previous.cloak, device), 0.0, 255.0), region) if previous else None
    before = {n: torch.from_numpy(d)[None].to(device) for n, d in previous.descriptors.items()} if previous else {}

    steps, reached = 0, False
    while True:
        protected = torch.clamp(x + m * delta, 0.0, 255.0)
        views = [(protected, points)] + [attacker_view(x, m * delta, points, config.views, generator)
                                         for _ in range(config.views.samples - 1)]
        terms, temporal = {}, protected.new_zeros(())
        for r in members:
            crops = torch.cat([align_crop(v[0], p[None], r.crop) for v, p in views])
            feats = r.net(crops)
            # Eq. (5)'s L_f with Fawkes' target, in units of this network's match distance
            per_view = (torch.linalg.vector_norm(feats - targets[r.name], dim=-1)
                        - torch.linalg.vector_norm(feats - originals[r.name], dim=-1)) / r.threshold
            terms[r.name] = per_view.mean()
            if r.name in before:
                temporal = temporal + torch.linalg.vector_norm(feats[:1] - before[r.name], dim=-1).sum() / r.threshold
        d = dssim(_face(protected, region), x_face)[0]
        stacked = torch.stack(list(terms.values()))
        if float(stacked.max().detach()) <= config.loss_threshold and float(d.detach()) <= config.budget_dssim:
            reached = True
            break
        if steps >= config.max_iters:
            break
        # the mean moves every network; the worst one, added again, gets the lagging network moving
        loss = stacked.mean() + stacked.max() + config.budget_weight * torch.relu(d - config.budget_dssim)
        if still is not None:
            loss = loss + config.temporal_feature_weight * temporal / len(members)
            loss = loss + config.temporal_ssim_weight * torch.relu(
                dssim(_face(protected, region), still)[0] - config.budget_dssim / 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1

    cloak = (m * delta.detach())[0].permute(1, 2, 0).cpu().numpy().copy()
    return CloakResult(cloak=cloak, iterations=steps, dssim=float(d.detach()),
                       feature_loss={n: round(float(t.detach()), 4) for n, t in terms.items()}, reached=reached)
