"""Transformer blocks that understand a per-token keep mask.

During training a dropped tubelet cannot be removed from the batch (the keep decision must stay
differentiable), so, as in DynamicViT (Rao et al., 2021, Eq. 9), dropped tokens are removed from every
*other* token's attention by masking the softmax; each token still attends to itself so no row is
empty. At inference the dropped tokens are gathered away and the mask is ``None``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["masked_attention", "masked_mean", "Block", "TokenClassifier"]


def masked_attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:
    """Scaled dot-product attention in which tokens with ``keep == 0`` are invisible to the others.

    Shape:
        q, k, v: (B, heads, N, d); keep: (B, N) in [0, 1] or None. Returns (B, heads, N, d).
    """
    if keep is None:
        return F.scaled_dot_product_attention(q, k, v)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    # Subtracting the row maximum changes nothing but overflow; detached, it costs no backward pass.
    scores = scores - scores.detach().amax(dim=-1, keepdim=True)
    n = keep.shape[1]
    eye = torch.eye(n, dtype=keep.dtype, device=keep.device)
    # DynamicViT Eq. 9: A_ij = exp(s_ij) G_j / sum_k exp(s_ik) G_k, with G_ii forced to 1.
    gate = keep[:, None, None, :] * (1 - eye) + eye
    weights = scores.exp() * gate
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-6)
    return weights @ v


def masked_mean(x: Tensor, keep: Tensor | None) -> Tensor:
    """Mean over the kept tokens.

    Shape:
        x: (B, N, D); keep: (B, N) or None. Returns (B, D).
    """
    if keep is None:
        return x.mean(dim=1)
    w = keep.unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-6)


class Block(nn.Module):
    """Pre-norm transformer block (attention + MLP) with an optional keep mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Shape: x (B, N, D), keep (B, N) or None -> (B, N, D)."""
        qkv = self.qkv(self.norm1(x))
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn = masked_attention(q, k, v, keep)
        x = x + self.proj(rearrange(attn, "b h n d -> b n (h d)"))
        return x + self.mlp(self.norm2(x))


class TokenClassifier(nn.Module):
    """A few blocks, mean-pooled over kept tokens, then a linear layer.

    Used for the action head (the service), the adversary of training, and the fresh attacker of
    evaluation, so that the attacker is at least as strong as the adversary it replaces.
    """

    def __init__(self, dim: int, heads: int, depth: int, out: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Shape: x (B, N, D), keep (B, N) or None -> logits (B, out)."""
        for block in self.blocks:
            x = block(x, keep)
        return self.out(self.norm(masked_mean(x, keep)))
