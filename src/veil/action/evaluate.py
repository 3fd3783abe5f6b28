"""Evaluation of a frozen STPrivacy model: action top-1, privacy under a fresh attacker, keep ratio, FLOPs.

Privacy is measured the way the paper's practical attack works (see `attack.py`): attackers are fitted
on the training split's anonymized tokens and on its decoded previews, and scored on the test split.
The report keeps both and calls the higher cMAP the privacy of the model (the worst case for the
people in the video). With a noisy anonymizer (`anonymize.py`) every clip is sent once, so the
attackers, like a service, see one noise draw per clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from veil.action.attack import TokenAttacker, VideoAttacker, fit_attacker, predict_probs
from veil.action.metrics import AttributeScores, attribute_scores, chance_scores, top1
from veil.action.model import STPrivacy, flops, to_input

__all__ = ["Collected", "ActionReport", "collect", "evaluate"]

Batch = tuple[Tensor, Tensor, Tensor]


@dataclass
class Collected:
    """What the service receives for a set of clips, with the labels.

    Shape:
        logits (M, C); tokens (M, K, D); index (M, K); preview (M, T, H, W, 3) uint8 or None;
        actions (M,); attributes (M, A).
    """

    logits: np.ndarray
    tokens: Tensor
    index: Tensor
    preview: Tensor | None
    actions: np.ndarray
    attributes: np.ndarray


def collect(model: STPrivacy, batches: Iterable[Batch], keep_ratio: float | None = None,
            strength: float = 1.0, preview: bool = False) -> Collected:
    """Run the frozen model (hard top-k) over all batches."""
    model.eval()
    parts: dict[str, list] = {"logits": [], "tokens": [], "index": [], "preview": [], "a": [], "p": []}
    with torch.no_grad():
        for video, action, attrs in batches:
            logits, z, enc = model(to_input(video), keep_ratio, strength)
            parts["logits"].append(logits)
            parts["tokens"].append(z)
            parts["index"].append(enc.index)
            if preview:
                parts["preview"].append((model.decode(z, enc.index) * 255).round().to(torch.uint8))
            parts["a"].append(action)
            parts["p"].append(attrs)
    return Collected(
        torch.cat(parts["logits"]).numpy(), torch.cat(parts["tokens"]), torch.cat(parts["index"]),
        torch.cat(parts["preview"]) if preview else None,
        torch.cat(parts["a"]).numpy(), torch.cat(parts["p"]).numpy(),
    )


@dataclass(frozen=True)
class ActionReport:
    """Numbers of one model at one keep ratio and strength (fractions in [0, 1])."""

    action_top1: float
    keep_ratio: float  # measured: kept tubelets / all tubelets
    gflops: float  # multiply-accumulates per clip, x1e-9
    chance: AttributeScores
    token_privacy: AttributeScores | None
    video_privacy: AttributeScores | None

    @property
    def privacy(self) -> AttributeScores | None:
        """The attacker with the higher cMAP (the worst case for privacy)."""
        found = [p for p in (self.token_privacy, self.video_privacy) if p is not None]
        return max(found, key=lambda p: p.cmap) if found else None

    def to_dict(self) -> dict[str, object]:
        return {
            "action_top1": self.action_top1, "keep_ratio": self.keep_ratio, "gflops": self.gflops,
            "chance": self.chance.to_dict(),
            "token_attacker": self.token_privacy.to_dict() if self.token_privacy else None,
            "video_attacker": self.video_privacy.to_dict() if self.video_privacy else None,
        }


def evaluate(model: STPrivacy, train_batches: Callable[[], Iterable[Batch]],
             test_batches: Callable[[], Iterable[Batch]], keep_ratio: float | None = None,
             strength: float = 1.0, attacker_epochs: int = 20, video_attack: bool = True,
             attacker_seed: int = 0) -> ActionReport:
    """Score ``model`` on the test split; attackers learn from the training split."""
    c = model.config
    test = collect(model, test_batches(), keep_ratio, strength, preview=video_attack)
    names = c.attributes or tuple(f"attribute_{i}" for i in range(c.num_attributes))
    kept = test.index.shape[1] / c.num_tokens
    token_p = video_p = None
    if c.num_attributes:
        train = collect(model, train_batches(), keep_ratio, strength, preview=video_attack)
        attacker = fit_attacker(lambda: TokenAttacker(c.dim, c.heads, c.num_attributes, max(1, c.head_depth)),
                                train.tokens, torch.as_tensor(train.attributes), attacker_epochs,
                                seed=attacker_seed)
        token_p = attribute_scores(predict_probs(attacker, test.tokens), test.attributes, names)
        if video_attack:
            assert train.preview is not None and test.preview is not None
            cnn = fit_attacker(lambda: VideoAttacker(c.num_attributes), train.preview,
                               torch.as_tensor(train.attributes), attacker_epochs, seed=attacker_seed)
            video_p = attribute_scores(predict_probs(cnn, test.preview), test.attributes, names)
    chance = chance_scores(test.attributes, names) if c.num_attributes else AttributeScores((), (), (), ())
    return ActionReport(top1(test.logits, test.actions), kept, flops(c, keep_ratio) / 1e9, chance,
                        token_p, video_p)
