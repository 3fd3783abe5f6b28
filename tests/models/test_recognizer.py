"""Golden tests of the dlib ResNet port against dlib itself, on real photos."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from veil.align import RECOGNIZER_CROP
from veil.models.recognizer import FaceRecognizer, descriptor_distance

PEOPLE = {"obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden"}


@pytest.fixture(scope="module")
def net() -> FaceRecognizer:
    return FaceRecognizer.pretrained()


def _describe(net: FaceRecognizer, crops: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(crops).permute(0, 3, 1, 2).float()).numpy()


@pytest.mark.parametrize("name", list(PEOPLE))
def test_descriptor_matches_dlib_on_the_same_chip(net: FaceRecognizer, dlib_ref, photo: Callable, name: str) -> None:
    image = photo(name)
    chip = dlib_ref.chip(image, dlib_ref.largest_face(image))
    ref = dlib_ref.descriptor(chip)
    mine = _describe(net, chip[None])[0]
    # measured 0.034-0.038: face-api stores the weights as uint8
    assert np.linalg.norm(mine - ref) < 0.05
    assert abs(np.linalg.norm(mine) - np.linalg.norm(ref)) < 0.03


def test_same_person_below_threshold_different_above(net: FaceRecognizer, dlib_ref, photo: Callable,
                                                      pair_distances: Callable) -> None:
    crops = [dlib_ref.aligned(photo(name), RECOGNIZER_CROP) for name in PEOPLE]
    d = _describe(net, np.stack(crops))
    same, diff = pair_distances(d, list(PEOPLE.values()))
    # measured: Obama-Obama 0.35-0.46, Obama-Biden 0.74-0.83 (MTCNN landmarks: 0.35-0.43, 0.78-0.86)
    assert max(same) < net.threshold < min(diff)
    assert min(diff) - max(same) > 0.2


def test_gradient_reaches_the_pixels(net: FaceRecognizer, dlib_ref, photo: Callable) -> None:
    image = photo("obama.jpg")
    chip = torch.from_numpy(dlib_ref.chip(image, dlib_ref.largest_face(image))).permute(2, 0, 1)[None].float()
    target = net(chip).detach()
    x = (chip + torch.randn_like(chip) * 4).requires_grad_(True)
    loss = descriptor_distance(net(x), target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_equals_single_and_rejects_wrong_shape(net: FaceRecognizer) -> None:
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        batch = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)
    assert batch.shape == (2, 128)
    with pytest.raises(ValueError, match=r"\(B, 3, 150, 150\)"):
        net(torch.rand(150, 150, 3))
