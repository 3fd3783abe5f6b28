"""Privacy sparsification: score every tubelet token and keep only the action-relevant ones.

STPrivacy (Li et al., 2023, Sec. 3.2) drops action-irrelevant tubelets with adaptive token selection.
The predictor and its training follow DynamicViT (Rao et al., 2021), which the paper builds on:

- a light MLP sees each token's local feature next to a global (masked mean) feature and outputs
  keep / drop logits (DynamicViT Eq. 5-6);
- in training the decision is a hard Gumbel-softmax sample with a straight-through gradient, multiplied
  into the previous stage's mask, so the predictor learns from the action loss through the attention
  mask (Eq. 7-9); a ratio loss pulls the kept fraction toward the target (Eq. 11);
- at inference the ``k`` best-scoring tokens are kept exactly (hard top-k), ``k = round(N * ratio)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veil.errors import InputError

__all__ = ["KeepPredictor", "gumbel_keep", "stage_ratios", "stage_counts", "topk_index", "ratio_loss"]


class KeepPredictor(nn.Module):
    """Keep/drop logits for every token (DynamicViT's ``PredictorLG``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out = nn.Sequential(
            nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(),
            nn.Linear(dim // 4, 2),
        )

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Shape: x (B, N, D), keep (B, N) or None -> logits (B, N, 2), index 0 = keep."""
        h = self.inp(x)
        half = self.dim // 2
        local, glob = h[..., :half], h[..., half:]
        if keep is None:
            g = glob.mean(dim=1, keepdim=True)
        else:
            w = keep.unsqueeze(-1)
            g = (glob * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1e-6)
        return self.out(torch.cat([local, g.expand_as(glob)], dim=-1))


def gumbel_keep(logits: Tensor, prev_keep: Tensor, tau: float = 1.0) -> Tensor:
    """Differentiable hard keep decision: 1 = keep, with a straight-through gradient.

    Shape:
        logits: (B, N, 2); prev_keep: (B, N). Returns (B, N) in {0, 1} (values), soft gradient.
    """
    sample = F.gumbel_softmax(logits, tau=tau, hard=True)[..., 0]
    return sample * prev_keep


def stage_ratios(keep_ratio: float, stages: int) -> list[float]:
    """Fraction of all tokens alive after each pruning stage; the last one is ``keep_ratio``."""
    return [keep_ratio ** ((s + 1) / stages) for s in range(stages)]


def stage_counts(num_tokens: int, keep_ratio: float, stages: int) -> list[int]:
    """Number of tokens kept after each stage at inference (never fewer than one)."""
    if not 0.0 < keep_ratio <= 1.0:
        raise InputError(f"keep ratio must be in (0, 1], got {keep_ratio}")
    counts = [max(1, round(num_tokens * r)) for r in stage_ratios(keep_ratio, stages)]
    # Rounding can make a later stage keep more than an earlier one; a stage can only drop tokens.
    for i in range(1, len(counts)):
        counts[i] = min(counts[i], counts[i - 1])
    return counts


def topk_index(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` highest scores per row, in ascending index order.

    Shape:
        scores: (B, N). Returns (B, k) int64.
    """
    if not 1 <= k <= scores.shape[1]:
        raise InputError(f"cannot keep {k} of {scores.shape[1]} tokens")
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def ratio_loss(stage_keeps: list[Tensor], keep_ratio: float) -> Tensor:
    """DynamicViT Eq. 11: squared gap between the kept fraction of each sample and its stage target.

    Shape:
        stage_keeps: list of (B, N) masks, one per stage. Returns a scalar.
    """
    if not stage_keeps:
        return torch.zeros(())
    targets = stage_ratios(keep_ratio, len(stage_keeps))
    losses = [(m.mean(dim=1) - t).pow(2).mean() for m, t in zip(stage_keeps, targets, strict=True)]
    return torch.stack(losses).mean()
