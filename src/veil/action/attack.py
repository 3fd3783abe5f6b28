"""The privacy attack of evaluation: a *fresh* attribute classifier fitted after the model is frozen.

STPrivacy argues that practical attackers probe the whole video, not single frames (Sec. 1, 4). So the
privacy numbers here never come from the adversary used in training, which the anonymizer was
optimised to fool; they come from a new classifier trained, with labels, on what the service receives:

- `TokenAttacker`: the kept, anonymized tokens (the same architecture family as the adversary);
- `VideoAttacker`: a 3D CNN on whole clips -- the raw, blurred or downsampled videos of the baselines,
  or STPrivacy's decoded preview.

Each attacker is trained on the training split with 15% of it held out to pick the epoch with the
lowest validation loss (an attacker who over-fits would understate the leak), then scored on the
test split.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veil.action.blocks import TokenClassifier
from veil.action.model import to_input

__all__ = ["TokenAttacker", "VideoAttacker", "fit_attacker", "predict_probs"]


class TokenAttacker(TokenClassifier):
    """Attribute logits from a set of tokens. Shape: (B, K, D) -> (B, A)."""

    def __init__(self, dim: int, heads: int, attributes: int, depth: int = 1) -> None:
        super().__init__(dim, heads, depth, attributes)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        return super().forward(x, keep)


class VideoAttacker(nn.Module):
    """A small 3D CNN over the whole clip. Shape: (B, T, H, W, 3) uint8 -> (B, A) logits."""

    def __init__(self, attributes: int, width: int = 16) -> None:
        super().__init__()

        def unit(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1),
                                 nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            unit(3, width, (1, 2, 2)), unit(width, 2 * width, (2, 2, 2)), unit(2 * width, 4 * width, (2, 2, 2)),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.out = nn.Linear(4 * width, attributes)

    def forward(self, video: Tensor) -> Tensor:
        return self.out(self.features(to_input(video)))


def _batches(n: int, size: int, generator: torch.Generator | None) -> list[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(size))


def predict_probs(model: nn.Module, inputs: Tensor, batch_size: int = 128) -> np.ndarray:
    """Sigmoid outputs of ``model`` over ``inputs`` in eval mode. Shape: (M, ...) -> (M, A)."""
    model.eval()
    with torch.no_grad():
        out = [torch.sigmoid(model(inputs[i])) for i in _batches(len(inputs), batch_size, None)]
    return torch.cat(out).numpy()


def fit_attacker(make: Callable[[], nn.Module], inputs: Tensor, labels: Tensor, epochs: int = 20,
                 batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                 on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train a fresh attacker, keeping the weights of the epoch with the lowest held-out loss.

    Shape:
        inputs: (M, ...) what the attacker sees; labels: (M, A) in {0, 1}.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make()
    labels = labels.float()
    order = torch.randperm(len(inputs), generator=g)
    n_val = max(1, int(0.15 * len(inputs)))
    val, tr = order[:n_val], order[n_val:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        model.train()
        for idx in _batches(len(tr), batch_size, g):
            rows = tr[idx]
            loss = F.binary_cross_entropy_with_logits(model(inputs[rows]), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(F.binary_cross_entropy_with_logits(model(inputs[val]), labels[val]))
        if val_loss < best:
            best = val_loss
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, val_loss)
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model
