"""Privacy helpers and the attack protocol on descriptors with a known answer."""

from __future__ import annotations

import numpy as np

from veil.detect.track import iou_matrix
from veil.evaluate.attack import attack_track, knn_predict, linear_predict
from veil.evaluate.privacy import matches_after, reidentified


def test_iou_by_hand() -> None:
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


def test_matches_after() -> None:
    orig = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    np.testing.assert_array_equal(matches_after(orig, np.array([[1, 1, 11, 11]])), [True, False])
    np.testing.assert_array_equal(matches_after(orig, np.zeros((0, 4))), [False, False])


def test_reidentified_at_threshold() -> None:
    o = np.zeros((3, 4), np.float32)
    p = np.array([[0.5, 0, 0, 0], [0.6, 0, 0, 0], [0, 0.8, 0, 0]], np.float32)
    dist, same = reidentified(o, p, 0.6)
    np.testing.assert_allclose(dist, [0.5, 0.6, 0.8])
    np.testing.assert_array_equal(same, [True, False, False])


def _clusters(rng: np.random.Generator, centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c + rng.normal(0, 0.05, (n, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n)


def test_classifiers_separate_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16))
    x, y = _clusters(rng, centres, 10)
    tx, ty = _clusters(rng, centres, 5)
    assert (knn_predict(x, y, tx) == ty).mean() == 1.0
    assert (linear_predict(x, y, tx) == ty).mean() == 1.0


def test_attack_protocol_known_answers() -> None:
    rng = np.random.default_rng(1)
    others = _clusters(rng, rng.normal(0, 1, (5, 16)), 4)
    person = rng.normal(0, 1, 16)
    frames = np.arange(40)
    clean = person + rng.normal(0, 0.05, (40, 16))
    # no protection: trained on the person's real faces, the attacker names every clean face
    r = attack_track(0, frames, clean.copy(), clean, others, "x", "knn")
    assert r.protection_success == 0.0 and r.train_protected_faces == 20 and r.test_clean_faces == 16
    # a cloak that moves the features far away: the clean faces fall to other people
    cloaked = clean + 5.0
    for classifier in ("knn", "linear"):
        assert attack_track(0, frames, cloaked, clean, others, "x", classifier).protection_success == 1.0


def test_detect_around_maps_boxes_back_to_the_frame(clip_frames: list) -> None:
    from veil.detect import get_detector
    from veil.evaluate.privacy import detect_around

    detector = get_detector("centerface")
    frame = clip_frames[0]
    full = detector.detect(frame)
    near = detect_around(detector, [frame], [full.boxes])[0][0]
    assert len(full) == 1 and len(near) == 1
    # the same face, found in its 256-px region, lands on the full-frame box (measured IoU 0.88)
    assert iou_matrix(near, full.boxes)[0, 0] > 0.8
