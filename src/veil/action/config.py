"""Configuration of the STPrivacy action model, with presets.

The defaults follow the authors' release: 16-frame clips at 112 px cut into 2x16x16 tubelets (VideoMAE
style, 8x7x7 = 392 tokens) and a ViT-S sized encoder (384 wide, 12 blocks, 6 heads). The `small` and
`tiny` presets shrink every axis so that training fits on a laptop CPU; the synthetic benchmark uses
`small`, the unit tests `tiny`.

Choices where the paper is silent (said here so a reader can change them knowingly):

- `keep_ratio` is the fraction of *all* tubelets that survives the last pruning stage. Pruning is spread
  over the blocks in `prune_at` geometrically (stage s of S keeps ``keep_ratio ** (s / S)``), as
  DynamicViT spreads its keep ratio over three stages of a 12-block ViT.
- The anonymizer is `anonymizer_depth` transformer blocks plus a linear map on the kept tokens; the
  action head ("the service") and the adversary are `head_depth` blocks plus a pooled linear layer.
- `anonymizer_noise` is 0 in every preset (and in checkpoints written before it existed): the noisy
  bottleneck of `anonymize.py` is chosen per run (`veil action train --anonymizer-noise`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from veil.errors import InputError

__all__ = ["ActionConfig", "PRESETS", "preset"]


@dataclass(frozen=True)
class ActionConfig:
    """Shape of the video transformer and of its privacy mechanisms."""

    frames: int = 16
    image_size: int = 112
    tubelet: tuple[int, int, int] = (2, 16, 16)  # (time, height, width) of one token
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    prune_at: tuple[int, ...] = (3, 6, 9)  # blocks *before* which tokens are pruned
    keep_ratio: float = 0.5
    anonymizer_depth: int = 1
    anonymizer_noise: float = 0.0  # std of the anonymizer's noise on unit-variance tokens; 0 = none
    head_depth: int = 1
    num_actions: int = 51
    num_attributes: int = 5
    sparsify: bool = True
    anonymize: bool = True
    actions: tuple[str, ...] = field(default_factory=tuple)
    attributes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        t, h, w = self.tubelet
        if self.frames % t or self.image_size % h or self.image_size % w:
            raise InputError(
                f"tubelet {self.tubelet} must divide the clip ({self.frames} frames, "
                f"{self.image_size} px); pick frames/image_size that are multiples of it"
            )
        if self.anonymizer_noise < 0:
            raise InputError(f"anonymizer_noise must be >= 0, got {self.anonymizer_noise}")
        if self.dim % self.heads:
            raise InputError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise InputError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if any(not 0 < b < self.depth for b in self.prune_at):
            raise InputError(f"prune_at {self.prune_at} must name blocks between 1 and {self.depth - 1}")
        if self.actions and len(self.actions) != self.num_actions:
            raise InputError(f"{len(self.actions)} action names for {self.num_actions} actions")
        if self.attributes and len(self.attributes) != self.num_attributes:
            raise InputError(f"{len(self.attributes)} attribute names for {self.num_attributes} attributes")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Number of tubelets along (time, height, width)."""
        t, h, w = self.tubelet
        return self.frames // t, self.image_size // h, self.image_size // w

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionConfig:
        d = dict(d)
        for key in ("tubelet", "prune_at", "actions", "attributes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def with_(self, **changes: Any) -> ActionConfig:
        return replace(self, **changes)


PRESETS: dict[str, ActionConfig] = {
    "paper": ActionConfig(),
    "small": ActionConfig(frames=8, image_size=32, tubelet=(2, 8, 8), dim=64, depth=3, heads=4,
                          mlp_ratio=2.0, prune_at=(1, 2)),
    "tiny": ActionConfig(frames=8, image_size=32, tubelet=(2, 8, 8), dim=32, depth=2, heads=2,
                         mlp_ratio=2.0, prune_at=(1,)),
}


def preset(name: str, **changes: Any) -> ActionConfig:
    """A named preset with some fields replaced, e.g. ``preset("small", num_actions=6)``."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **changes)
