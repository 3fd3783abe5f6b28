"""Detectors on real faces: pinned boxes and landmarks, agreement between two independent
networks, no face on a face-free image, and a face found on every frame of real videos."""

import cv2
import numpy as np
import pytest

from veil.detect import detect, get_detector
from veil.detect.base import fit_size, nms
from veil.detect.centerface import merge_looks
from veil.detect.track import iou_matrix
from veil.faces import Faces
from veil.media.read import read_frames

# Pinned at detect_size=None (full resolution; these faces are over 320 pixels, so CenterFace's
# come from its coarse look), CenterFace at the shipped precision (its 8-bit model is judged
# against it in test_centerface_int8.py). Boxes xyxy, landmarks: eyes, nose, mouth corners.
GOLDEN = {
    ("centerface", "obama.jpg"): ([368.0, 85.7, 619.2, 433.2],
                                  [[434.9, 214.8], [560.1, 210.0], [500.5, 274.4], [441.7, 335.5], [549.9, 331.2]]),
    ("centerface", "biden.jpg"): ([427.6, 157.9, 716.5, 572.2],
                                  [[531.2, 316.9], [662.9, 338.1], [594.2, 406.2], [514.5, 459.3], [626.0, 476.8]]),
    ("mtcnn", "obama.jpg"): ([367.5, 78.1, 617.2, 429.9],
                             [[444.7, 214.3], [550.7, 214.2], [495.2, 277.9], [434.9, 324.1], [556.2, 320.8]]),
    ("mtcnn", "biden.jpg"): ([426.8, 166.9, 712.3, 560.9],
                             [[534.9, 319.0], [654.8, 344.7], [597.8, 406.7], [517.9, 461.5], [624.4, 479.8]]),
}


@pytest.fixture(scope="module")
def detectors():
    return {"centerface": get_detector("centerface", detect_size=None, precision="fp32"),
            "mtcnn": get_detector("mtcnn", detect_size=None)}


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


def test_a_close_up_face_gets_one_box_of_its_size(detectors, load_rgb):
    # A selfie video: 1080x1920 portrait, the face about 800 pixels wide. CenterFace alone sizes
    # faces up to about 450 pixels of its input; the coarse look sizes this one.
    face = load_rgb("0-f1-su-ph.jpg")  # 512x512, the face about 300 pixels wide
    frame = np.full((1920, 1080, 3), 90, np.uint8)
    big = cv2.resize(face, (1080, 1080), interpolation=cv2.INTER_LINEAR)
    frame[400:1480] = big
    reference = _best(detectors["mtcnn"].detect(frame))  # MTCNN's pyramid sizes any face
    assert reference.sizes[0] > 550
    found = get_detector("centerface").detect(frame)
    assert len(found) == 1
    assert iou_matrix(found.boxes, reference.boxes)[0, 0] > 0.6
    assert 0.8 < found.sizes[0] / reference.sizes[0] < 1.25
    # Seen whole by CenterFace alone, the face splits into boxes too small.
    fine_only = get_detector("centerface", detect_size=None)
    alone = fine_only._look(frame, *fit_size(1080, 1920, None, multiple=32))
    assert alone.sizes.max() < 0.8 * reference.sizes[0]


def test_merge_looks_takes_large_faces_from_the_coarse_look():
    def faces(*boxes):
        b = np.array(boxes, float)
        return Faces(b, np.zeros((len(b), 5, 2)), np.full(len(b), 0.9))

    fine = faces([100, 100, 500, 500],    # a fragment of the large face
                 [300, 300, 600, 650],    # another, mostly inside it
                 [900, 100, 1000, 200],   # a small face elsewhere
                 [770, 300, 870, 400])    # a small face beside the large one, 10% under its box
    coarse = faces([80, 60, 780, 800],    # the large face, sized right
                   [905, 100, 1000, 205])  # the small face again: the fine look keeps its own
    merged = merge_looks(fine, coarse, fine_scale=1.0)
    assert sorted(merged.boxes[:, 0].tolist()) == [80, 770, 900]
    assert merge_looks(fine, coarse[1:], fine_scale=1.0) is fine  # no large face: the fine look
