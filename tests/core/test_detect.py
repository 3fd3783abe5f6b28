"""Detectors on real faces: pinned boxes and landmarks, agreement between two independent
networks, no face on a face-free image, and a face found on every frame of real videos."""

import numpy as np
import pytest

from veil.detect import detect, get_detector
from veil.detect.base import nms
from veil.detect.track import iou_matrix
from veil.faces import Faces
from veil.video import read_frames

# Pinned at detect_size=None (full resolution). Boxes xyxy, landmarks: eyes, nose, mouth corners.
GOLDEN = {
    ("centerface", "obama.jpg"): ([371.8, 111.7, 600.2, 420.5],
                                  [[437.7, 219.5], [555.0, 210.9], [507.4, 268.2], [449.8, 327.7], [552.3, 320.6]]),
    ("centerface", "biden.jpg"): ([429.9, 192.1, 702.0, 547.8],
                                  [[523.9, 321.3], [659.4, 349.5], [588.5, 405.9], [506.3, 443.5], [622.3, 466.7]]),
    ("mtcnn", "obama.jpg"): ([367.5, 78.1, 617.2, 429.9],
                             [[444.7, 214.3], [550.7, 214.2], [495.2, 277.9], [434.9, 324.1], [556.2, 320.8]]),
    ("mtcnn", "biden.jpg"): ([426.8, 166.9, 712.3, 560.9],
                             [[534.9, 319.0], [654.8, 344.7], [597.8, 406.7], [517.9, 461.5], [624.4, 479.8]]),
}


@pytest.fixture(scope="module")
def detectors():
    return {name: get_detector(name, detect_size=None) for name in ("centerface", "mtcnn")}


def _best(faces: Faces) -> Faces:
    return faces[int(np.argmax(faces.scores))]


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_golden_box_and_landmarks(detectors, load_rgb, key):
    name, image = key
    faces = _best(detectors[name].detect(load_rgb(image)))
    box, points = GOLDEN[key]
    np.testing.assert_allclose(faces.boxes[0], box, atol=3.0)
    np.testing.assert_allclose(faces.landmarks[0], points, atol=3.0)


@pytest.mark.parametrize("image", ["obama.jpg", "biden.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg"])
def test_two_independent_detectors_agree_on_landmarks(detectors, load_rgb, image):
    rgb = load_rgb(image)
    a, b = (_best(detectors[n].detect(rgb)) for n in ("centerface", "mtcnn"))
    size = float(a.sizes[0])
    # Different networks, different training: the key points agree within 8% of the face size.
    assert np.abs(a.landmarks[0] - b.landmarks[0]).max() < 0.08 * size
    left, right, nose = a.landmarks[0][0], a.landmarks[0][1], a.landmarks[0][2]
    assert left[0] < nose[0] < right[0]


def test_multi_face_photo_finds_all_five(detectors, load_rgb):
    rgb = load_rgb("multi_face.jpg")
    for det in detectors.values():
        faces = det.detect(rgb)
        assert len(faces) == 5
        assert (faces.scores > 0.8).all()


@pytest.mark.parametrize("name", ["centerface", "mtcnn"])
def test_no_face_on_a_landscape(detectors, load_rgb, name):
    faces = detectors[name].detect(load_rgb("free-mountain-vector-01.jpg"))
    assert len(faces) == 0
    assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)


def test_detect_size_changes_cost_not_answer(load_rgb):
    rgb = load_rgb("obama.jpg")
    full = _best(detect(rgb, detector="centerface", detect_size=None))
    small = _best(detect(rgb, detector="centerface", detect_size=480))
    assert np.abs(full.landmarks - small.landmarks).max() < 0.05 * float(full.sizes[0])
    assert iou_matrix(full.boxes, small.boxes)[0, 0] > 0.75


def test_batch_equals_one_by_one(detectors, load_rgb):
    images = [load_rgb("obama.jpg")[:900, :900], load_rgb("biden.jpg")[:900, :900]]
    for det in detectors.values():
        batch = det.detect_batch(images)
        for image, got in zip(images, batch):
            single = det.detect(image)
            np.testing.assert_allclose(got.boxes, single.boxes, atol=1e-2)


@pytest.mark.parametrize("video", ["single_face.mp4", "WolfgangLanger_Pexels.mp4"])
def test_recall_on_every_frame_of_real_videos(media, video):
    det = get_detector("centerface")
    frames = list(read_frames(media(video)))
    missed = [i for i, f in enumerate(frames) if len(det.detect(f)) == 0]
    assert missed == []


@pytest.mark.parametrize("boxes,scores,expected", [
    (np.zeros((0, 4)), np.zeros(0), []),
    (np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]), np.array([0.9, 0.8, 0.7]), [0, 2]),
    (np.array([[0, 0, 10, 10], [2, 2, 8, 8]]), np.array([0.5, 0.9]), [1, 0]),  # nested: IoU 0.36 < 0.5
])
def test_nms(boxes, scores, expected):
    assert nms(boxes.astype(float), scores, 0.5).tolist() == expected


def test_nms_min_mode_removes_nested_box():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 8, 8]], float)
    assert nms(boxes, np.array([0.5, 0.9]), 0.5, mode="min").tolist() == [1]


def test_centerface_conversion_declares_only_the_image_as_input():
    # weights declared as graph inputs would stop ONNX Runtime from folding them (2x slower)
    onnx = pytest.importorskip("onnx")
    from veil.models.centerface import INPUT_NAME, centerface_path

    path = centerface_path()
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert len(graph.initializer) > 100
    assert list(path.parent.glob("centerface-dynamic*.onnx")) == [path]
