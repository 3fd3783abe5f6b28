"""Action and privacy metrics as STPrivacy reports them.

- action: top-1 accuracy;
- privacy, per attribute: accuracy and F1 of the positive class at a 0.5 threshold, and average
  precision; cMAP is the class-wise mean of the attributes' AP (the VISPR / PA-HMDB51 convention the
  paper follows). Lower privacy numbers are better for the people in the video.
- chance levels, so numbers can be read against a guessing attacker: accuracy of always answering the
  majority class, and AP of a random ranking (the positive rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["top1", "average_precision", "AttributeScores", "attribute_scores", "chance_scores"]


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose arg-max is the label. Shape: logits (M, C), labels (M,)."""
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(axis=1) == labels).mean())


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve, as the mean precision at each positive (sklearn's AP).

    Shape:
        scores, labels: (M,); labels in {0, 1}. NaN if there is no positive.
    """
    labels = labels.astype(bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def _f1(pred: np.ndarray, labels: np.ndarray) -> float:
    tp = float((pred & labels).sum())
    denom = float(pred.sum() + labels.sum())
    return 2 * tp / denom if denom else 0.0


@dataclass(frozen=True)
class AttributeScores:
    """Per-attribute privacy scores (fractions in [0, 1]), with their means."""

    names: tuple[str, ...]
    accuracy: tuple[float, ...]
    f1: tuple[float, ...]
    ap: tuple[float, ...]

    @property
    def mean_accuracy(self) -> float:
        return float(np.nanmean(self.accuracy))

    @property
    def mean_f1(self) -> float:
        return float(np.nanmean(self.f1))

    @property
    def cmap(self) -> float:
        return float(np.nanmean(self.ap))

    def to_dict(self) -> dict[str, object]:
        return {
            "per_attribute": {n: {"accuracy": a, "f1": f, "ap": p}
                              for n, a, f, p in zip(self.names, self.accuracy, self.f1, self.ap, strict=True)},
            "mean_accuracy": self.mean_accuracy, "mean_f1": self.mean_f1, "cmap": self.cmap,
        }


def attribute_scores(probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> AttributeScores:
    """Score an attacker's attribute probabilities.

    Shape:
        probs: (M, A) in [0, 1]; labels: (M, A) in {0, 1}.
    """
    labels = labels.astype(bool)
    pred = probs >= 0.5
    acc = tuple(float((pred[:, j] == labels[:, j]).mean()) for j in range(labels.shape[1]))
    f1 = tuple(_f1(pred[:, j], labels[:, j]) for j in range(labels.shape[1]))
    ap = tuple(average_precision(probs[:, j], labels[:, j]) for j in range(labels.shape[1]))
    return AttributeScores(tuple(names), acc, f1, ap)


def chance_scores(labels: np.ndarray, names: tuple[str, ...]) -> AttributeScores:
    """What an attacker that knows only the base rates gets: majority-class accuracy, AP equal to
    the positive rate, and the F1 of guessing positive at the base rate (also the positive rate).

    Shape:
        labels: (M, A) in {0, 1}.
    """
    rate = labels.astype(float).mean(axis=0)
    acc = tuple(float(max(r, 1 - r)) for r in rate)
    return AttributeScores(tuple(names), acc, tuple(float(r) for r in rate), tuple(float(r) for r in rate))
