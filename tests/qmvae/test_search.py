"""The code search's view of a face turned in the frame: the turn measured from the key points, the
straightened crop turned back to how the face lies there, and the search's loss judging that view
against the original seen the same way."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from veil.align import CropSpec, crop_faces, template_points
from veil.detect import get_detector
from veil.qmvae.model import QMVAEConfig
from veil.qmvae.paste import inside_frame, soft_ellipse
from veil.qmvae.search import ServiceSearch, face_rolls, in_frame
from veil.qmvae.service import ExpressionEnsemble

TURN = 25.0


@pytest.fixture(scope="module")
def turned(load_rgb):
    """single_face.jpg turned TURN degrees (counter-clockwise on screen) about its centre, and its faces."""
    image = load_rgb("single_face.jpg")
    h, w = image.shape[:2]
    frame = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), TURN, 1.0), (w, h))
    return frame, get_detector("centerface", detect_size=None).detect(frame)


@pytest.mark.parametrize("turn", [0.0, 12.0, -30.0, 170.0])
def test_the_roll_is_the_eye_lines_angle(turn):
    points = template_points(CropSpec(112, 0.0)).astype(np.float64)
    a = np.radians(turn)
    turned = (points - 56.0) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + 200.0
    assert face_rolls(turned[None])[0] == pytest.approx(turn, abs=1e-3)


def test_a_straightened_crop_turned_back_by_its_roll_lies_as_in_the_frame(turned):
    frame, faces = turned
    spec = CropSpec(160, 0.5)
    straight = torch.from_numpy(crop_faces(frame, faces.landmarks, spec)).permute(0, 3, 1, 2).float()
    # the same face cut from the frame at the same centre and scale, not straightened
    m = cv2.estimateAffinePartial2D(faces.landmarks[0].astype(np.float32),
                                    _points_in_crop(frame, faces.landmarks[0], spec))[0]
    scale = float(np.hypot(*m[:, 0]))
    centre = np.linalg.solve(m[:, :2], np.array([80.0, 80.0]) - m[:, 2])
    unturned = cv2.warpAffine(frame, np.array([[scale, 0, 80 - scale * centre[0]], [0, scale, 80 - scale * centre[1]]]),
                              (160, 160)).astype(np.float32)
    roll = face_rolls(faces.landmarks)

    def error(rolls: np.ndarray) -> float:
        grid = F.affine_grid(in_frame(rolls), list(straight.shape), align_corners=False)
        back = F.grid_sample(straight, grid, padding_mode="border", align_corners=False)[0].permute(1, 2, 0).numpy()
        return float(np.abs(back - unturned)[40:120, 40:120].mean())

    assert error(roll) < 0.4 * error(-roll)
    assert error(roll) < 0.6 * error(np.zeros(1))


def _points_in_crop(frame: np.ndarray, points: np.ndarray, spec: CropSpec) -> np.ndarray:
    from veil.align import alignment_matrices

    m = alignment_matrices(points[None], spec)[0]
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def test_the_turned_view_is_judged_against_the_original_seen_the_same_way(turned):
    frame, faces = turned
    config = QMVAEConfig(size=96)
    service = ExpressionEnsemble(config.crop)
    search = ServiceSearch(service, soft_ellipse(config.size))
    own = crop_faces(frame, faces.landmarks, service.own_crop)
    inside = inside_frame(frame, faces.landmarks, service.own_crop)
    original = torch.from_numpy(crop_faces(frame, faces.landmarks, config.crop)).permute(0, 3, 1, 2).float() / 255.0
    face = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        turned_back = search.loss(own, inside, face_rolls(faces.landmarks))(original, face)
        plain_only = search.loss(own, inside)(original, face)
        # how far the service's answer on the face as it lies in the frame is from its answer on the
        # straightened face: what the turned view would cost an unchanged face against the wrong target
        x = torch.from_numpy(own).permute(0, 3, 1, 2).float() / 255.0
        grid = F.affine_grid(in_frame(face_rolls(faces.landmarks)), list(x.shape), align_corners=False)
        straight = F.log_softmax(service.on_own_crop(x), -1)
        as_it_lies = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        lying = F.log_softmax(service.on_own_crop(as_it_lies), -1)
        apart = float((straight.exp() * (straight - lying)).sum(-1).mean())
    # the original face, pasted over itself, keeps its answer in every view, the turned one included
    assert float(turned_back[0]) < 0.05 and float(plain_only[0]) < 0.05
    assert apart > 3 * float(turned_back[0])

