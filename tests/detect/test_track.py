"""Tracker: stable ids, gaps interpolated, new tracks drawn back, keep-alive, scene cuts."""

import numpy as np
import pytest

from veil.detect.track import Tracker, TrackerConfig, iou_matrix, is_scene_cut, scene_thumbnail
from veil.faces import Faces


def face(x: float, y: float = 50.0, size: float = 40.0) -> Faces:
    box = np.array([[x, y, x + size, y + size]])
    points = np.array([[[x + 10, y + 15], [x + 30, y + 15], [x + 20, y + 25], [x + 12, y + 32], [x + 28, y + 32]]])
    return Faces(box, points, np.array([0.9]))


def run(tracker: Tracker, frames: list[Faces], cuts: set[int] = frozenset()) -> list[Faces]:
    out = []
    for i, f in enumerate(frames):
        out += tracker.push(f, scene_cut=i in cuts)
    return out + tracker.flush()


def test_output_has_one_entry_per_input_frame_in_order():
    frames = [face(10 + 2 * i) if i % 3 else Faces.empty() for i in range(20)]
    assert len(run(Tracker(), frames)) == 20


def test_ids_are_stable_for_a_moving_face():
    out = run(Tracker(), [face(10 + 3 * i) for i in range(15)])
    assert {int(f.track_ids[0]) for f in out} == {0}
    assert not any(f.filled.any() for f in out)


def test_a_gap_is_interpolated_between_detections():
    frames = [face(10), face(14), Faces.empty(), Faces.empty(), face(26), face(30)]
    out = run(Tracker(TrackerConfig(lookahead=3)), frames)
    assert [len(f) for f in out] == [1] * 6
    assert out[2].filled[0] and out[3].filled[0]
    # The filled boxes cover the straight line between x=14 and x=26.
    assert out[2].boxes[0, 0] <= 18 + 1e-3 and out[2].boxes[0, 2] >= 18 + 40 - 1e-3
    assert out[3].boxes[0, 0] <= 22 + 1e-3 and out[3].boxes[0, 2] >= 22 + 40 - 1e-3


def test_a_lost_face_stays_masked_for_max_missing_frames():
    frames = [face(10)] * 3 + [Faces.empty()] * 8
    out = run(Tracker(TrackerConfig(max_missing=4, lookahead=0)), frames)
    assert [len(f) for f in out] == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


def test_a_new_face_is_drawn_back_lookahead_frames():
    frames = [Faces.empty()] * 5 + [face(100)] * 3
    out = run(Tracker(TrackerConfig(lookahead=3)), frames)
    assert [len(f) for f in out] == [0, 0, 1, 1, 1, 1, 1, 1]
    assert out[2].filled[0] and not out[5].filled[0]


def test_scene_cut_ends_tracks_and_is_not_crossed():
    frames = [face(10)] * 4 + [face(300)] * 4
    out = run(Tracker(TrackerConfig(lookahead=3)), frames, cuts={4})
    # No box of the second shot is drawn back into the first, no box of the first carried on.
    assert all(f.boxes[:, 0].max() < 100 for f in out[:4])
    assert all(f.boxes[:, 0].min() > 200 for f in out[4:])
    assert int(out[0].track_ids[0]) != int(out[4].track_ids[0])


def test_smoothed_box_never_uncovers_the_detection():
    rng = np.random.default_rng(0)
    frames = [face(100 + rng.normal(0, 5), 50 + rng.normal(0, 5)) for _ in range(30)]
    out = run(Tracker(), frames)
    for got, raw in zip(out, frames):
        b, r = got.boxes[0], raw.boxes[0]
        assert b[0] <= r[0] and b[1] <= r[1] and b[2] >= r[2] and b[3] >= r[3]


def test_two_faces_keep_their_ids_when_crossing_paths_slowly():
    frames = [Faces.concatenate([face(10 + 4 * i, 10), face(200 - 4 * i, 120)]) for i in range(10)]
    out = run(Tracker(), frames)
    first = {int(i): out[0].boxes[k, 1] for k, i in enumerate(out[0].track_ids)}
    for f in out:
        for k, i in enumerate(f.track_ids):
            assert abs(f.boxes[k, 1] - first[int(i)]) < 20


@pytest.mark.parametrize("a,b,expected", [
    ([[0, 0, 10, 10]], [[0, 0, 10, 10]], 1.0),
    ([[0, 0, 10, 10]], [[5, 0, 15, 10]], 1 / 3),
    ([[0, 0, 10, 10]], [[20, 20, 30, 30]], 0.0),
])
def test_iou(a, b, expected):
    assert iou_matrix(np.array(a, float), np.array(b, float))[0, 0] == pytest.approx(expected)


def test_iou_of_nothing_is_empty():
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_scene_cut_detection():
    dark = np.zeros((90, 160, 3), np.uint8)
    light = np.full((90, 160, 3), 200, np.uint8)
    assert not is_scene_cut(None, scene_thumbnail(dark))
    assert not is_scene_cut(scene_thumbnail(dark), scene_thumbnail(dark + 5))
    assert is_scene_cut(scene_thumbnail(dark), scene_thumbnail(light))


def test_camera_motion_carries_tracks_through_a_fast_pan():
    # A 30-pixel face in a pan of 20 pixels a frame, detected every other frame: it moves past any
    # overlap with where it was. Carried by the camera's motion, it keeps one track, and the frames
    # between detections are covered where the face is (not where it was).
    frames = [face(10 + 20 * i, size=30) if i % 2 == 0 else Faces.empty() for i in range(12)]
    tracker = Tracker(TrackerConfig(lookahead=0))
    out = [tracker.push(f, camera=(20.0, 0.0))[0] for f in frames]
    assert {int(f.track_ids[0]) for f in out} == {0}
    for i in (1, 5, 11):
        truth = face(10 + 20 * i, size=30).boxes
        assert iou_matrix(truth, out[i].boxes).max() > 0.9
    # Without it, every detection starts a new track, and a frame between them lags a whole step.
    tracker = Tracker(TrackerConfig(lookahead=0))
    still = [tracker.push(f)[0] for f in frames]
    assert len({int(i) for f in still for i in f.track_ids}) == 6
    assert iou_matrix(face(10 + 20 * 11, size=30).boxes, still[11].boxes).max() < 0.5
