"""STPrivacy: a video transformer over tubelet tokens with privacy sparsification and anonymization.

Li et al., "STPrivacy: Spatio-Temporal Privacy-Preserving Action Recognition" (ICCV 2023). A clip is
cut into tubelets (Sec. 3.1, as in ViViT / VideoMAE), embedded by one 3D convolution, and run through
transformer blocks; before the blocks named in ``prune_at`` a predictor drops action-irrelevant tokens
(`sparsify.py`), then the kept tokens are anonymized (`anonymize.py`) and sent to the action head.
What the action head receives -- kept, anonymized tokens and their tubelet positions -- is what a
service would receive; `decode` turns it back into pixels (dropped tubelets blank) so a person can see
it. The decoder is trained on detached tokens: it shows what can be recovered, it never puts anything
back into the tokens.

Two code paths, as in DynamicViT: in training every token stays in the batch and dropped ones are
masked out of attention and pooling; in evaluation they are gathered away, which is where the FLOPs
saving comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from veil.action.anonymize import Anonymizer, blend
from veil.action.blocks import Block, TokenClassifier
from veil.action.config import ActionConfig
from veil.action.sparsify import KeepPredictor, gumbel_keep, stage_counts, topk_index

__all__ = ["Encoded", "STPrivacy", "TubeletEmbed", "to_input", "tubelets", "flops", "MEAN", "STD"]

MEAN, STD = 0.45, 0.225  # Kinetics pixel statistics, as in VideoMAE's preprocessing


def to_input(video: Tensor) -> Tensor:
    """uint8 clips to normalised float model input.

    Shape:
        video: (B, T, H, W, 3) uint8. Returns (B, 3, T, H, W) float32.
    """
    x = rearrange(video, "b t h w c -> b c t h w").float() / 255.0
    return (x - MEAN) / STD


def sincos_position(grid: tuple[int, int, int], dim: int) -> Tensor:
    """Fixed sine-cosine position of every tubelet, separable over (time, row, column).

    VideoMAE (the authors' backbone) uses a fixed sinusoid table; here the channels are split in three
    so that "same place, later time" is a simple relation, which matters when training from scratch
    on a few thousand clips (the paper's models start from pretrained weights we do not have).

    Shape:
        Returns (1, T' * H' * W', dim), time-major like `TubeletEmbed`.
    """
    per_axis = [dim // 3 // 2 * 2] * 3
    per_axis[0] += dim - sum(per_axis)  # time gets the remainder (even, since dim and parts are)
    tables = []
    for size, channels in zip(grid, per_axis, strict=True):
        pos = torch.arange(size, dtype=torch.float32)[:, None]
        freq = torch.exp(-torch.arange(0, channels, 2, dtype=torch.float32) * (torch.log(torch.tensor(1e4)) / channels))
        table = torch.zeros(size, channels)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)[:, : channels // 2]
        tables.append(table)
    t, h, w = grid
    full = torch.cat([
        tables[0][:, None, None, :].expand(t, h, w, -1),
        tables[1][None, :, None, :].expand(t, h, w, -1),
        tables[2][None, None, :, :].expand(t, h, w, -1),
    ], dim=-1)
    return full.reshape(1, t * h * w, dim)


class TubeletEmbed(nn.Module):
    """Non-overlapping t x p x p tubelets, each linearly projected to ``dim`` (one strided Conv3d)."""

    def __init__(self, dim: int, tubelet: tuple[int, int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=tubelet, stride=tubelet)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x (B, 3, T, H, W) -> (B, T/t * H/p * W/p, dim), time-major token order."""
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")


@dataclass
class Encoded:
    """Encoder output. Training: all N tokens plus a keep mask. Evaluation: the K kept tokens."""

    tokens: Tensor  # (B, N, D) training, (B, K, D) evaluation
    keep: Tensor | None  # (B, N) mask in training, None in evaluation
    index: Tensor  # (B, K) tubelet index of every row of `tokens`
    stage_keeps: list[Tensor]  # (B, N) mask after each pruning stage (training only)


class STPrivacy(nn.Module):
    """The whole model: embed -> blocks with pruning -> anonymizer -> action head (+ preview decoder)."""

    def __init__(self, config: ActionConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = TubeletEmbed(c.dim, c.tubelet)
        self.register_buffer("pos", sincos_position(c.grid, c.dim), persistent=False)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        prune_at = c.prune_at if c.sparsify else ()
        self.prune_at = tuple(prune_at)
        self.predictors = nn.ModuleList(KeepPredictor(c.dim) for _ in prune_at)
        self.anonymizer = (Anonymizer(c.dim, c.heads, c.anonymizer_depth, c.mlp_ratio, c.anonymizer_noise)
                           if c.anonymize else None)
        self.head = TokenClassifier(c.dim, c.heads, c.head_depth, c.num_actions, c.mlp_ratio)
        t, p, q = c.tubelet
        self.decoder = nn.Sequential(nn.LayerNorm(c.dim), nn.Linear(c.dim, 3 * t * p * q))

    def encode(self, video: Tensor, keep_ratio: float | None = None, tau: float = 1.0) -> Encoded:
        """Embed and run the blocks, pruning before each block in ``prune_at``.

        Shape:
            video: (B, 3, T, H, W) normalised float.
        """
        ratio = self.config.keep_ratio if keep_ratio is None else keep_ratio
        x = self.embed(video) + self.pos
        b, n, _ = x.shape
        index = torch.arange(n, device=x.device).expand(b, n)
        keep = torch.ones(b, n, device=x.device, dtype=x.dtype) if self.training else None
        prune = self.prune_at if ratio < 1.0 else ()  # nothing to drop: skip the predictors
        counts = stage_counts(n, ratio, len(prune)) if prune else []
        stage_keeps: list[Tensor] = []
        stage = 0
        for i, block in enumerate(self.blocks):
            if stage < len(prune) and i == prune[stage]:
                logits = self.predictors[stage](x, keep)
                if self.training:
                    keep = gumbel_keep(logits, keep, tau)
                    stage_keeps.append(keep)
                else:
                    rows = topk_index(logits.softmax(dim=-1)[..., 0], counts[stage])
                    x = x.gather(1, rows.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
                    index = index.gather(1, rows)
                stage += 1
            x = block(x, keep)
        return Encoded(self.norm(x), keep, index, stage_keeps)

    def anonymize(self, enc: Encoded, strength: float | Tensor = 1.0) -> Tensor:
        """Tokens as the service receives them. Shape: like ``enc.tokens``."""
        if self.anonymizer is None:
            return enc.tokens
        return blend(enc.tokens, self.anonymizer(enc.tokens, enc.keep), strength)

    def forward(self, video: Tensor, keep_ratio: float | None = None,
                strength: float = 1.0) -> tuple[Tensor, Tensor, Encoded]:
        """Action logits (B, num_actions), anonymized tokens, and the encoder output."""
        enc = self.encode(video, keep_ratio)
        z = self.anonymize(enc, strength)
        return self.head(z, enc.keep), z, enc

    def decode(self, tokens: Tensor, index: Tensor) -> Tensor:
        """Pixels of the kept tubelets; dropped tubelets are black.

        Shape:
            tokens: (B, K, D); index: (B, K). Returns (B, T, H, W, 3) float in [0, 1].
        """
        c = self.config
        gt, gh, gw = c.grid
        t, p, q = c.tubelet
        patches = self.decoder(tokens)  # (B, K, 3*t*p*q), normalised pixel space
        full = patches.new_zeros(tokens.shape[0], c.num_tokens, patches.shape[-1])
        full.scatter_(1, index.unsqueeze(-1).expand_as(patches), patches * STD + MEAN)
        video = rearrange(full, "b (gt gh gw) (c t p q) -> b (gt t) (gh p) (gw q) c",
                          gt=gt, gh=gh, gw=gw, c=3, t=t, p=p, q=q)
        return video.clamp(0, 1)


def tubelets(video: Tensor, tubelet: tuple[int, int, int]) -> Tensor:
    """The decoder's target: raw normalised pixels of every tubelet.

    Shape:
        video: (B, 3, T, H, W). Returns (B, N, 3*t*p*q), same token order as `TubeletEmbed`.
    """
    t, p, q = tubelet
    return rearrange(video, "b c (gt t) (gh p) (gw q) -> b (gt gh gw) (c t p q)", t=t, p=p, q=q)


def _block_macs(n: int, dim: int, hidden: int) -> int:
    return n * (4 * dim * dim + 2 * dim * hidden) + 2 * n * n * dim


def flops(config: ActionConfig, keep_ratio: float | None = None) -> int:
    """Multiply-accumulates of one clip at inference (the unit fvcore and DynamicViT call FLOPs).

    The tokens alive in each block follow `stage_counts`, so the saving of sparsification shows.
    """
    c = config
    ratio = c.keep_ratio if keep_ratio is None else keep_ratio
    t, p, q = c.tubelet
    n = c.num_tokens
    hidden = int(c.dim * c.mlp_ratio)
    total = n * c.dim * 3 * t * p * q
    prune_at = c.prune_at if c.sparsify and ratio < 1.0 else ()
    counts = stage_counts(n, ratio, len(prune_at)) if prune_at else []
    pred = c.dim * c.dim + c.dim * (c.dim // 2) + (c.dim // 2) * (c.dim // 4) + (c.dim // 4) * 2
    stage = 0
    for i in range(c.depth):
        if stage < len(prune_at) and i == prune_at[stage]:
            total += n * pred
            n = counts[stage]
            stage += 1
        total += _block_macs(n, c.dim, hidden)
    if c.anonymize:
        total += c.anonymizer_depth * _block_macs(n, c.dim, hidden) + n * c.dim * c.dim
    total += c.head_depth * _block_macs(n, c.dim, hidden) + c.dim * c.num_actions
    return total

