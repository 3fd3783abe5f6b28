"""Action and privacy metrics on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from veil.action.metrics import attribute_scores, average_precision, chance_scores, top1


def test_top1() -> None:
    assert top1(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1])) == pytest.approx(2 / 3)


def test_average_precision_by_hand() -> None:
    # ranking: pos, neg, pos, neg -> precision at the positives 1/1 and 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.9, 0.8]), np.array([1, 1])) == 1.0


def test_attribute_scores_and_cmap() -> None:
    probs = np.array([[0.9, 0.2], [0.4, 0.6], [0.7, 0.1], [0.2, 0.8]])
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = attribute_scores(probs, labels, ("face", "skin"))
    assert s.accuracy == (1.0, 0.5)
    assert s.f1 == (1.0, pytest.approx(0.5))
    assert s.ap[0] == 1.0 and s.ap[1] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert s.cmap == pytest.approx((1.0 + 0.5) / 2)


def test_chance_is_the_base_rate() -> None:
    c = chance_scores(np.array([[1, 0], [1, 0], [0, 0], [1, 1]]), ("a", "b"))
    assert c.accuracy == (0.75, 0.75) and c.ap == (0.75, 0.25)
