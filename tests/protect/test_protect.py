"""Protections on real faces: the face changes strongly, nothing outside the mask changes, and
after blur / mosaic / solid neither detector finds the face any more."""

import cv2
import numpy as np
import pytest

import veil
from veil.detect import get_detector
from veil.detect.track import iou_matrix
from veil.errors import InputError
from veil.faces import Faces
from veil.media.read import read_frames
from veil.protect import ProtectState, face_mask, get_protector, protector_names
from veil.protect.classic import eye_band, mosaic

CLASSIC = ["blur", "mosaic", "solid", "noise", "cartoon", "sticker"]
PHOTOS = ["obama.jpg", "biden.jpg", "0-f15-hao-ph.jpg", "multi_face.jpg"]


@pytest.fixture(scope="module")
def detectors():
    return [get_detector("centerface", detect_size=None), get_detector("mtcnn", detect_size=None)]


@pytest.fixture(scope="module")
def faces_of(detectors, load_rgb):
    cache = {}

    def get(name):
        if name not in cache:
            image = load_rgb(name)
            cache[name] = (image, detectors[0].detect(image))
        return cache[name]

    return get


def test_registry_has_the_classic_methods():
    assert set(CLASSIC + ["blindfold"]) <= set(protector_names())


@pytest.mark.parametrize("method", CLASSIC)
def test_face_changes_and_outside_is_untouched(faces_of, method):
    image, faces = faces_of("obama.jpg")
    out = get_protector(method)(image, faces, ProtectState())
    mask = face_mask(image.shape, faces, mask_scale=1.3)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    x1, y1, x2, y2 = faces.boxes[0].astype(int)
    change = np.abs(out[y1:y2, x1:x2].astype(int) - image[y1:y2, x1:x2].astype(int)).mean()
    assert change > 15, f"{method} changed the face by only {change:.1f} levels"


def test_blindfold_blacks_out_exactly_the_eye_band(faces_of):
    image, faces = faces_of("obama.jpg")
    out = get_protector("blindfold")(image, faces, ProtectState())
    band = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(band, np.round(eye_band(faces.landmarks[0])).astype(np.int32), 1)
    band = band.astype(bool)
    assert (out[band] == 0).all()
    np.testing.assert_array_equal(out[~band], image[~band])
    for eye in faces.landmarks[0][:2].astype(int):
        assert band[eye[1], eye[0]]


@pytest.mark.parametrize("method", ["blur", "mosaic", "solid"])
@pytest.mark.parametrize("photo", PHOTOS)
def test_detectors_find_no_face_after_protection(detectors, faces_of, method, photo):
    image, faces = faces_of(photo)
    assert len(faces) >= 1
    out = get_protector(method)(image, faces, ProtectState())
    for det in detectors:
        found = det.detect(out)
        # A face found after protection would have to overlap an original face.
        overlap = iou_matrix(found.boxes, faces.boxes)
        assert not (overlap > 0.3).any(), f"{det.name} still finds a face after {method} on {photo}"


def test_no_faces_means_an_identical_frame(load_rgb):
    image = load_rgb("free-mountain-vector-01.jpg")
    for method in CLASSIC + ["blindfold"]:
        np.testing.assert_array_equal(get_protector(method)(image, Faces.empty(), ProtectState()), image)


def test_noise_is_deterministic_for_a_seed(faces_of):
    image, faces = faces_of("obama.jpg")
    noise = get_protector("noise")
    a = noise(image, faces, ProtectState(seed=1))
    b = noise(image, faces, ProtectState(seed=1))
    c = noise(image, faces, ProtectState(seed=2))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_laplace_noise_has_the_requested_scale(faces_of):
    image, faces = faces_of("biden.jpg")
    flat = np.full_like(image, 128)
    out = get_protector("noise", noise_scale=10.0)(flat, faces, ProtectState())
    mask = face_mask(image.shape, faces)
    diff = out[mask].astype(float) - 128
    # Laplace(0, b): mean absolute deviation is b.
    assert np.abs(diff).mean() == pytest.approx(10.0, rel=0.05)


def test_mosaic_cells_are_block_means():
    crop = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    out = mosaic(crop, 8)
    for y in (0, 8):
        for x in (0, 8):
            cell = crop[y:y + 8, x:x + 8].reshape(-1, 3).mean(0)
            assert np.abs(out[y:y + 8, x:x + 8].reshape(-1, 3) - cell).max() <= 1


def test_mosaic_fixed_block_pixels_as_in_the_qmvae_paper(faces_of):
    image, faces = faces_of("obama.jpg")
    out = get_protector("mosaic", block_pixels=8, mask_shape="box")(image, faces, ProtectState())
    row = out[int(faces.boxes[0, 1]) + 40, int(faces.boxes[0, 0]) + 16:int(faces.boxes[0, 0]) + 120]
    runs = np.count_nonzero(np.any(np.diff(row.astype(int), axis=0) != 0, axis=1))
    assert runs <= (120 - 16) // 8 + 1


def test_sticker_covers_the_face_and_shows_only_blur_where_transparent(faces_of, tmp_path):
    from PIL import Image

    art = np.zeros((100, 100, 4), np.uint8)
    art[25:75, 25:75] = (255, 0, 0, 255)  # an opaque red square in a transparent frame
    Image.fromarray(art).save(tmp_path / "sticker.png")
    image, faces = faces_of("obama.jpg")
    out = get_protector("sticker", image=str(tmp_path / "sticker.png"), mask_shape="box")(image, faces, ProtectState())
    mask = face_mask(image.shape, faces, mask_scale=1.3, ellipse=False)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = min(y1 - y0, x1 - x0)  # the square sticker fits the box: `side` wide, centred
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    red = out[cy - side // 4 + 2:cy + side // 4 - 2, cx - side // 4 + 2:cx + side // 4 - 2]
    assert (red == (255, 0, 0)).all()
    # Where the sticker is transparent the face is blurred, judged without veil's own blur: the
    # fine detail (variance of the Laplacian) is mostly gone and the pixels are not the face's.
    border = (slice(y0, y1), slice(x0, x0 + max(side // 5, 8)))  # the sticker's transparent left edge

    def detail(a):
        return cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()

    assert detail(out[border]) < 0.2 * detail(image[border])
    assert np.abs(out[border].astype(int) - image[border].astype(int)).mean() > 3


def test_sticker_image_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        get_protector("sticker", image=str(tmp_path / "missing.png"))


@pytest.mark.parametrize("options", [{"mask_scale": -1}, {"mask_shape": "star"}])
def test_bad_options_are_input_errors(options):
    with pytest.raises(InputError):
        get_protector("blur", **options)


def test_an_option_the_method_lacks_is_an_error_naming_its_options():
    with pytest.raises(InputError, match=r"mosaic has no option 'strength'.*blocks"):
        get_protector("mosaic", strength=9.0)
    get_protector("mosaic", strength=None)  # None is "not given"


def test_an_option_the_method_lacks_is_exit_2_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from veil.cli import app

    result = CliRunner().invoke(app, ["protect", str(tmp_path / "x.mp4"), "-m", "mosaic", "--strength", "9"])
    assert result.exit_code == 2 and "has no option 'strength'" in result.output
    result = CliRunner().invoke(app, ["protect", str(tmp_path / "x.mp4"), "-m", "blur", "-O", "blokcs=3"])
    assert result.exit_code == 2 and "no option 'blokcs'" in result.output


def test_unknown_method_lists_the_choices():
    with pytest.raises(InputError, match="blur"):
        get_protector("nope")


def test_protected_video_shows_no_face_to_the_thorough_detector(media, tmp_path):
    summary = veil.protect(media("single_face.mp4"), tmp_path / "out.mp4", method="blur")
    assert summary.frames == 72 and summary.faces >= 72
    # A different, slower detector than the one that placed the masks, on every other frame.
    thorough = get_detector("mtcnn", detect_size=None, min_face=40)
    frames = list(read_frames(tmp_path / "out.mp4"))[::2]
    leaked = [i for i, f in enumerate(frames) if len(thorough.detect(f))]
    assert leaked == []


def test_small_faces_of_a_1080p_wide_shot_are_hidden_at_the_defaults(load_rgb, tmp_path):
    group = load_rgb("multi_face.jpg")  # 5 faces about 100 pixels wide, shrunk to about 25
    small = cv2.resize(group, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(4):  # a slow pan
        frame = np.full((1080, 1920, 3), 110, np.uint8)
        y, x = 500 + 2 * t, 900 + 6 * t
        frame[y:y + small.shape[0], x:x + small.shape[1]] = small
        frames.append(frame)
    src = tmp_path / "wide.mp4"
    veil.media.write.write_frames(src, frames, 24)
    judge = get_detector("mtcnn", detect_size=None, min_face=12)
    seen = [judge.detect(f) for f in read_frames(src)]
    assert all(len(f) == 5 for f in seen)
    summary = veil.protect(src, tmp_path / "out.mp4", method="blur")
    # All five found on every frame. A face that moves most of its width between two looks can
    # start a second track beside its old one, which masks the empty spot it left for a few
    # frames: one more mask, never one less.
    assert all(5 <= n <= 6 for n in summary.faces_per_frame), summary.faces_per_frame
    # A face is still shown where the judge finds one on the protected frame, at the place of one
    # it found on the original (a blob between the blurred faces is no face of theirs).
    after = [judge.detect(f) for f in read_frames(tmp_path / "out.mp4")]
    leaked = [int((iou_matrix(a.boxes, b.boxes) > 0.3).sum()) for a, b in zip(after, seen)]
    assert leaked == [0, 0, 0, 0]
    # The same shot seen at 640 pixels, the old default: faces about 8 pixels wide, lost.
    assert veil.protect(src, None, method="blur", detect_size=640, dry_run=True).faces < 10


@pytest.mark.parametrize("size, mask_scale, grown", [(200, 1.3, 260), (20, 1.3, 36), (40, 1.5, 60), (10, 1.0, 26)])
def test_a_face_mask_grows_by_its_scale_and_at_least_a_margin(size, mask_scale, grown):
    from veil.protect.base import ellipse_boxes

    faces = Faces(np.array([[100.0, 100.0, 100.0 + size, 100.0 + size]]), np.zeros((1, 5, 2)), np.ones(1))
    box = ellipse_boxes(faces, mask_scale)[0]
    centre = 100 + size / 2
    np.testing.assert_allclose(box, [centre - grown / 2] * 2 + [centre + grown / 2] * 2)
