"""Golden test of Human's faceres (the second recognizer): same/different person on real photos."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from veil.align import FACERES_CROP
from veil.models.faceres import FaceRes

PEOPLE = {"obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden"}


@pytest.fixture(scope="module")
def net() -> FaceRes:
    return FaceRes.pretrained()


def test_same_person_below_threshold_different_above(net: FaceRes, dlib_ref, photo: Callable,
                                                      pair_distances: Callable) -> None:
    crops = [dlib_ref.aligned(photo(name), FACERES_CROP) for name in PEOPLE]
    with torch.no_grad():
        d = net(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()).numpy()
    assert d.shape == (4, 1024)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    same, diff = pair_distances(d, list(PEOPLE.values()))
    assert max(same) < net.threshold < min(diff), (same, diff)


def test_graph_reader_is_differentiable(net: FaceRes) -> None:
    x = (torch.rand(1, 3, 224, 224) * 255).requires_grad_(True)
    net(x)[0, :10].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_rejects_wrong_shape(net: FaceRes) -> None:
    with pytest.raises(ValueError, match="224"):
        net(torch.rand(224, 224, 3))
