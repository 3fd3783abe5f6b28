"""face-api's 68-landmark net against dlib's own 68-point shape predictor on real photos, and the
expression geometry: the same in numpy and torch, blind to a face's place, size and tilt, moved by
what moves a face's shape, and in agreement with the geometry of dlib's points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.align import crop_faces
from veil.detect import get_detector
from veil.models import store
from veil.models.landmarks68 import GEOMETRY, Landmark68Net, expression_geometry, square_box
from veil.qmvae.service import LANDMARK_CROP, ExpressionGeometry


@pytest.fixture(scope="module")
def net() -> Landmark68Net:
    return Landmark68Net.pretrained()


@pytest.fixture(scope="module")
def measured(net, dlib_ref, photo, face_photos):
    """Per dlib face of the photos: (dlib's 68 points, face-api's from dlib's box, face-api's from
    CenterFace's box of the same face, that face in veil's crop at QM-VAE's LANDMARK_CROP)."""
    detector = get_detector("centerface", detect_size=None)
    out = []
    for name in face_photos:
        image = photo(name)
        found = detector.detect(image)
        for det in dlib_ref.detector(image, 1):
            ref = np.array([[p.x, p.y] for p in dlib_ref.shape68(image, det).parts()], np.float32)
            box = np.array([[det.left(), det.top(), det.right(), det.bottom()]], np.float32)
            centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
            nearest = found.boxes[np.argmin(((centres - ref.mean(0)) ** 2).sum(1))][None]
            k = int(np.argmin(((centres - ref.mean(0)) ** 2).sum(1)))
            aligned = crop_faces(image, found.landmarks[k:k + 1], LANDMARK_CROP)[0]
            out.append((ref, net.landmarks(image, box)[0], net.landmarks(image, nearest)[0], aligned))
    return out


def _nme(points: np.ndarray, ref: np.ndarray) -> float:
    """Mean point error in eye distances (of the reference)."""
    eyes = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
    return float(np.linalg.norm(points - ref, axis=1).mean() / eyes)


def test_weights_come_from_face_apis_package():
    for name in ("faceapi/face_landmark_68_model-weights_manifest.json", "faceapi/face_landmark_68_model.bin"):
        artifact = store.ARTIFACTS[name]
        assert artifact.package is store.FACE_API and len(artifact.sha256) == 64


def test_points_land_where_dlibs_shape_predictor_puts_them(measured):
    """Two networks trained apart agree within a tenth of the eye distance on most real faces."""
    assert len(measured) >= 25
    from_dlib_box = np.array([_nme(ours, ref) for ref, ours, _, _ in measured])
    from_centerface = np.array([_nme(ours, ref) for ref, _, ours, _ in measured])
    assert np.median(from_dlib_box) < 0.10 and np.mean(from_dlib_box < 0.2) >= 0.85
    assert np.median(from_centerface) < 0.10 and np.mean(from_centerface < 0.2) >= 0.85


def test_geometry_follows_dlibs_points_across_faces(measured):
    ours = expression_geometry(np.stack([m[2] for m in measured]))
    ref = expression_geometry(np.stack([m[0] for m in measured]))
    corr = {name: np.corrcoef(ours[:, j], ref[:, j])[0, 1] for j, name in enumerate(GEOMETRY)}
    assert corr["mouth_open"] > 0.8 and corr["mouth_width"] > 0.7, corr
    assert corr["brow_height"] > 0.5 and corr["eye_open"] > 0.4, corr


def test_qmvae_geometry_on_veils_aligned_crop_follows_dlibs_points(measured, net):
    """What QM-VAE's training holds a drawn face to: the geometry of the face in veil's own crop."""
    crops = torch.from_numpy(np.stack([m[3] for m in measured])).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ours = ExpressionGeometry(LANDMARK_CROP, net)(crops).numpy()
    ref = expression_geometry(np.stack([m[0] for m in measured]))
    corr = {name: np.corrcoef(ours[:, j], ref[:, j])[0, 1] for j, name in enumerate(GEOMETRY)}
    assert corr["mouth_open"] > 0.75 and corr["mouth_width"] > 0.75 and corr["brow_height"] > 0.6, corr
    assert corr["eye_open"] > 0.5, corr


def test_geometry_is_blind_to_place_size_and_tilt_and_same_in_torch(measured):
    points = np.stack([m[0] for m in measured]).astype(np.float64)
    base = expression_geometry(points)
    turn = np.radians(20)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    moved = 2.5 * points @ rot.T + np.array([300.0, -40.0])
    assert np.allclose(expression_geometry(moved), base, atol=1e-6)
    as_torch = expression_geometry(torch.from_numpy(points))
    assert isinstance(as_torch, torch.Tensor) and np.allclose(as_torch.numpy(), base, atol=1e-9)


def test_geometry_moves_with_the_mouth_brows_and_lids(measured):
    points = measured[0][0].astype(np.float64)
    eyes = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    base = expression_geometry(points[None])[0]
    opened = points.copy()
    opened[65:68, 1] += 0.1 * eyes  # the inner lower lip drops
    raised = points.copy()
    raised[17:27, 1] -= 0.1 * eyes  # both brows go up
    shut = points.copy()
    shut[[37, 38, 43, 44], 1] = shut[[41, 40, 47, 46], 1]  # upper lids onto the lower
    g_open, g_raise, g_shut = (expression_geometry(p[None])[0] for p in (opened, raised, shut))
    assert g_open[0] > base[0] + 0.05 and abs(g_open[2] - base[2]) < 1e-9
    assert g_raise[2] == pytest.approx(base[2] + 0.1, abs=0.01) and g_raise[0] == pytest.approx(base[0])
    assert g_shut[3] < 0.02 < base[3]


def test_gradient_reaches_the_crop(net):
    crops = torch.full((2, 3, 112, 112), 128.0, requires_grad=True)
    expression_geometry(net(crops) * 112).sum().backward()
    assert crops.grad is not None and crops.grad.abs().sum() > 0


def test_square_box_and_empty_input(net):
    assert square_box(np.array([10, 20, 30, 60])) == (0.0, 20.0, 40.0, 60.0)
    assert net.landmarks(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4))).shape == (0, 68, 2)
    with pytest.raises(ValueError, match="square"):
        net.points(np.zeros((1, 112, 100, 3), np.uint8))
