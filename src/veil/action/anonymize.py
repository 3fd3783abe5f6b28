"""Privacy anonymization: change the kept tokens so that private attributes cannot be read from them.

STPrivacy (Sec. 3.3) manipulates the remaining action tubelets in the embedding space through
adversarial learning against a privacy-attribute classifier, while the action head is trained on the
same tokens. Choices made here where the paper is silent:

- The learned module ``A`` is a transformer block plus a linear map, and the tokens sent to the service
  are ``z = (1 - s) x + s A(x)``: ``s`` (strength) is 1 in training and is the *deployment* trade-off
  knob (0 = sparsified but not anonymized). The action head also sees a random ``s`` in training so it
  stays accurate at every setting.
- Min-max rather than gradient reversal: the adversary is fitted on detached tokens, and the anonymizer
  minimises a *confusion* loss that pushes the adversary's prediction toward the attribute prior (the
  "negative entropy" budget loss of Wu et al., TPAMI 2020, which the PPAR literature uses); driving the
  adversary toward being *wrong* would only flip the labels, which a fresh attacker reads back.
- The adversary sees what the service receives: the tokens *and* where they are (the tubelet position
  embedding is added to its input), since the pattern of kept tubelets can itself give away appearance.
- A noisy bottleneck (``noise`` > 0): every output token of ``A`` is normalised (zero mean, unit
  variance, no affine) and Gaussian noise of standard deviation ``noise`` is added, in training and at
  deployment. Against the adversary alone the anonymizer learns to *hide* attributes from the adversary
  of the moment (a fresh attacker trained for longer still read the shirt colour); with a
  fixed noise floor a low-amplitude code no longer survives, so what the action head does not need is
  crowded out. It is the Gaussian mechanism of the information-bottleneck view, on learned features
  rather than on any hand-picked colour.
- By default the adversarial gradient reaches ``A`` only (the encoder input is detached), so the encoder
  keeps a plain action representation and ``s`` spans raw-to-anonymized; `TrainConfig.encoder_privacy`
  lets a fraction of it reach the encoder and the keep predictors too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veil.action.blocks import Block

__all__ = ["Anonymizer", "blend", "confusion_loss"]


def blend(x: Tensor, anonymized: Tensor, strength: float | Tensor) -> Tensor:
    """``(1 - s) x + s A(x)``; ``strength`` is a float or a (B,) tensor of per-sample strengths.

    Shape:
        x, anonymized: (B, N, D). Returns (B, N, D).
    """
    if isinstance(strength, Tensor):
        strength = strength.view(-1, 1, 1)
    return x + strength * (anonymized - x)


class Anonymizer(nn.Module):
    """``A(x)``: blocks over the kept tokens, then a linear map that may drop any direction of x, then,
    with ``noise`` > 0, per-token normalisation plus Gaussian noise of that standard deviation."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0, noise: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.noise = noise

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Shape: x (B, N, D), keep (B, N) or None -> (B, N, D). Random when ``noise`` > 0."""
        for block in self.blocks:
            x = block(x, keep)
        x = self.proj(self.norm(x))
        if self.noise > 0:
            x = F.layer_norm(x, x.shape[-1:]) + self.noise * torch.randn_like(x)
        return x


def confusion_loss(logits: Tensor, prior: Tensor) -> Tensor:
    """Cross-entropy between the adversary's attribute prediction and the attribute prior, minus the
    prior's entropy: 0 when the adversary can do no better than guessing the base rate.

    Shape:
        logits: (B, A); prior: (A,) positive rates in (0, 1). Returns a scalar >= 0.
    """
    p = prior.clamp(1e-4, 1 - 1e-4).expand_as(logits)
    ce = F.binary_cross_entropy_with_logits(logits, p, reduction="none")
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    return (ce - entropy).mean()


