"""CenterFace's 8-bit model and its looks around tracked faces, on real frames and photos that its
calibration never saw: the same faces as the shipped network finds, in the same places."""

import numpy as np
import pytest

from veil.detect.centerface import CenterFace
from veil.detect.track import iou_matrix
from veil.errors import InputError
from veil.media.read import read_frames
from veil.models.centerface import CALIBRATION

PHOTOS = ["faceapi-sample1.jpg", "faceapi-sample2.jpg", "faceapi-sample3.jpg", "faceapi-sample4.jpg",
          "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg"]
CLIPS = ["single_face.mp4", "WolfgangLanger_Pexels.mp4"]


@pytest.fixture(scope="module")
def networks():
    return CenterFace(precision="fp32"), CenterFace(precision="int8")


@pytest.fixture(scope="module")
def images(media, load_rgb):
    frames = [f for clip in CLIPS for i, f in enumerate(read_frames(media(clip))) if i % 40 == 0]
    return frames + [load_rgb(name) for name in PHOTOS]


def test_judged_on_images_the_calibration_never_saw():
    assert not {f"media/{name}" for name in PHOTOS + CLIPS} & set(CALIBRATION)


def test_int8_finds_the_faces_fp32_finds(networks, images):
    fp32, int8 = networks
    faces = 0
    for image in images:
        a, b = fp32.detect(image), int8.detect(image)
        faces += len(a)
        assert len(a) == len(b)
        if len(a):
            iou = iou_matrix(a.boxes, b.boxes)
            assert iou.max(axis=1).min() > 0.75 and iou.max(axis=0).min() > 0.75
    assert faces >= 25  # the group photos' faces among them


def test_a_look_around_a_face_finds_it_where_the_whole_look_does(networks, images):
    _, int8 = networks
    for image in images:
        whole = int8.detect(image)
        if not len(whole):
            continue
        b, s = whole.boxes, whole.sizes
        regions = np.stack([b[:, 0] - 0.5 * s, b[:, 1] - 0.5 * s, b[:, 2] + 0.5 * s, b[:, 3] + 0.5 * s], axis=1)
        around = int8.detect_regions(image, regions, s)
        iou = iou_matrix(whole.boxes, around.boxes)
        assert iou.max(axis=1).min() > 0.6


def test_a_face_cut_by_a_regions_edge_is_left_to_the_whole_look(networks, load_rgb):
    _, int8 = networks
    image = load_rgb("obama.jpg")
    face = int8.detect(image)
    assert len(face) == 1
    x1, y1, x2, y2 = face.boxes[0]
    whole_region = np.array([[x1 - 100, y1 - 100, x2 + 100, y2 + 100]])
    assert len(int8.detect_regions(image, whole_region, face.sizes)) == 1
    # The region ends in the middle of the face: what it sees of it is not a face box to trust.
    half = np.array([[x1 - 100, y1 - 100, (x1 + x2) / 2, y2 + 100]])
    assert len(int8.detect_regions(image, half, face.sizes)) == 0
    # A region off the face finds nothing, and an empty list of regions costs nothing.
    assert len(int8.detect_regions(image, np.array([[0, 0, 60, 60]]), np.array([60.0]))) == 0
    assert len(int8.detect_regions(image, np.zeros((0, 4)), np.zeros(0))) == 0


def test_an_unknown_precision_is_refused():
    with pytest.raises(InputError, match="precision"):
        CenterFace(precision="fp16")


def test_small_looks_run_on_one_thread_and_find_what_the_full_session_finds(networks, images):
    _, int8 = networks
    small = int8._small_session
    assert small is not int8._session and small.get_session_options().intra_op_num_threads == 1
    one = CenterFace(threads=1)
    assert one._small_session is one._session  # already one thread: no second session
    for image in images:
        whole = int8.detect(image)
        if not len(whole):
            continue
        regions = whole.boxes + np.array([-1.0, -1.0, 1.0, 1.0]) * whole.sizes[:, None]
        int8._small_session, kept = int8._session, int8._small_session
        try:
            full = int8.detect_regions(image, regions, whole.sizes)
        finally:
            int8._small_session = kept
        assert np.allclose(int8.detect_regions(image, regions, whole.sizes).boxes, full.boxes, atol=1e-3)
