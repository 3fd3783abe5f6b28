"""The faces an attacker's pipeline may see instead of veil's: expectation over transformations.

A cloak optimised through one exact crop of one exact frame holds against that crop only. Anyone
who attacks it aligns the face with their own landmarks and crop convention, and meets it after a
re-encode (the upload, the download) and whatever a camera or player does to the picture. Each
optimisation step therefore averages its loss over `AttackerViews.samples` random versions of the
protected face (Athalye et al. 2018, "Synthesizing Robust Adversarial Examples"; Fawkes' stronger
modes do the same against crops and compression):

- the picture: gamma (+-`gamma`), a mild Gaussian blur (sigma up to `blur_sigma`), a resampling
  (down to `resample` of the size and back), and a JPEG round trip at a random quality (the
  8x8-block quantisation of a video encoder's intra frames), through which the gradient passes
  unchanged (BPDA: the forward pass is the real codec, the backward pass the identity);
- the cloak a pixel off the face (up to `cloak_shift`): warped to the next frame by the key
  points' move (the paper's reuse), it never lands exactly where it was made, and a cloak that
  works only in place would have to be made afresh every frame;
- the alignment: the five key points moved by a random similarity (scale +-`scale`, rotation
  +-`rotation_deg`, shift up to `shift` of the eye distance) and each point by up to
  `point_jitter` of it, which covers another detector's landmarks and another crop convention
  (dlib's chip from its own five points, for one).

The first sample of every step is the face exactly as veil writes it and aligns it, so the loss
that decides when to stop always includes the view veil measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import torch
import torch.nn.functional as F

__all__ = ["AttackerViews", "attacker_view", "jpeg_round_trip", "gaussian_blur"]


@dataclass(frozen=True)
class AttackerViews:
    """How differently an attacker may see a face (see the module docstring); `samples` views a step."""

    samples: int = 2
    scale: float = 0.10
    rotation_deg: float = 5.0
    shift: float = 0.05
    point_jitter: float = 0.04
    blur_sigma: float = 1.0
    resample: float = 0.6
    jpeg_quality: tuple[int, int] = (50, 95)
    gamma: float = 0.1
    cloak_shift: float = 1.0  # pixels (working resolution) the cloak may sit off the face

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100 or not 0 < self.resample <= 1:
            raise ValueError(f"need 1 <= jpeg quality {lo} <= {hi} <= 100 and 0 < resample <= 1")


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """`x` through a JPEG encode and decode, the gradient passed straight through (BPDA).

    Shape: (1, 3, H, W) float RGB in 0..255 -> the same
    """
    image = x[0].detach().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # nothing to learn from a failed encode: the view stays as it was
        return x
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    y = torch.from_numpy(decoded).to(x).permute(2, 0, 1)[None]
    return x + (y - x).detach()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur (edges replicated), differentiable. Shape: (B, C, H, W) -> the same."""
    if sigma < 0.25:
        return x
    radius = max(1, int(math.ceil(2.5 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _moved_points(points: torch.Tensor, views: AttackerViews, gen: torch.Generator) -> torch.Tensor:
    """The key points as another aligner might place them. Shape: (5, 2) -> (5, 2)."""
    eye = float(torch.linalg.vector_norm(points[1] - points[0]).clamp(min=1.0))
    angle = math.radians(_uniform(gen, -views.rotation_deg, views.rotation_deg))
    scale = _uniform(gen, 1 - views.scale, 1 + views.scale)
    turn = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                        dtype=points.dtype, device=points.device) * scale
    centre = points.mean(0, keepdim=True)
    shift = (torch.rand(2, generator=gen) * 2 - 1).to(points) * views.shift * eye
    jitter = (torch.rand(points.shape, generator=gen) * 2 - 1).to(points) * views.point_jitter * eye
    return (points - centre) @ turn.T + centre + shift + jitter


def _shifted(cloak: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """`cloak` moved by (dx, dy) pixels, bilinearly (zeros come in at the edges). Shape: (1, C, H, W)."""
    h, w = cloak.shape[-2:]
    theta = torch.tensor([[[1.0, 0.0, -2 * dx / max(w - 1, 1)], [0.0, 1.0, -2 * dy / max(h - 1, 1)]]],
                         dtype=cloak.dtype, device=cloak.device)
    grid = F.affine_grid(theta, list(cloak.shape), align_corners=True)
    return F.grid_sample(cloak, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def attacker_view(x: torch.Tensor, cloak: torch.Tensor, points: torch.Tensor, views: AttackerViews,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random view of a protected face region (`x` + `cloak`) and where its key points are taken to be.

    Shape:
        x, cloak: (1, 3, H, W) float RGB 0..255 and grey levels, points: (5, 2) region pixels
        -> the view (1, 3, H, W), its points (5, 2)
    """
    h, w = x.shape[-2:]
    if views.cloak_shift > 0:  # the cloak a little off the face: a warp to the next frame is never exact
        cloak = _shifted(cloak, _uniform(gen, -views.cloak_shift, views.cloak_shift),
                         _uniform(gen, -views.cloak_shift, views.cloak_shift))
    x = torch.clamp(x + cloak, 0.0, 255.0)
    gamma = _uniform(gen, 1 - views.gamma, 1 + views.gamma)
    x = 255.0 * (x.clamp(0, 255) / 255.0 + 1e-4).pow(gamma)
    x = gaussian_blur(x, _uniform(gen, 0.0, views.blur_sigma))
    factor = _uniform(gen, views.resample, 1.0)
    if factor < 0.98:
        small = F.interpolate(x, size=(max(8, round(h * factor)), max(8, round(w * factor))), mode="bilinear",
                              antialias=True, align_corners=False)
        x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    x = jpeg_round_trip(x, int(round(_uniform(gen, *views.jpeg_quality))))
    return x, _moved_points(points, views, gen)
