"""OpenCV's YUV <-> RGB conversions against swscale's accurate ones, on a real photo."""

import av
import numpy as np
import pytest

from veil.media.read import _ACCURATE
from veil.media.yuv import rgb_to_yuv420, yuv420_to_rgb

# (AVCOL_SPC code, the SWS_CS_* swscale takes for it, full range): BT.601 limited (OpenCV's own
# I420 path), BT.709 limited and full, BT.601 full, BT.2020 (the 3x4 transform path).
MATRICES = [(6, 5, False), (1, 1, False), (1, 1, True), (5, 5, True), (9, 9, False)]


@pytest.fixture
def photo(load_rgb):
    image = load_rgb("obama.jpg")
    return np.ascontiguousarray(image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2])


def _sws_planes(image, sws, full):
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    out = frame.reformat(format="yuv420p", dst_colorspace=sws, dst_color_range=2 if full else 1, interpolation=_ACCURATE)
    return out.to_ndarray()


def _sws_rgb(planes, sws, full):
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    return frame.reformat(format="rgb24", src_colorspace=sws, src_color_range=2 if full else 1,
                          interpolation=_ACCURATE).to_ndarray()


@pytest.mark.parametrize("matrix, sws, full", MATRICES)
def test_rgb_to_yuv_agrees_with_swscale(photo, matrix, sws, full):
    ours, theirs = rgb_to_yuv420(photo, matrix, full).astype(int), _sws_planes(photo, sws, full).astype(int)
    h = photo.shape[0]
    assert ours.shape == theirs.shape == (h * 3 // 2, photo.shape[1])
    assert np.abs(ours[:h] - theirs[:h]).max() <= 1  # luma: the same matrix, rounding apart
    assert np.abs(ours[h:] - theirs[h:]).mean() < 0.8  # chroma: filters differ at colour edges
    # ... and swscale's full-range chroma is biased by 0.6-0.7 level; ours brings the photo back as well or better.
    back = [_sws_rgb(planes.astype(np.uint8), sws, full).astype(int) - photo for planes in (ours, theirs)]
    assert np.abs(back[0].mean(axis=(0, 1))).max() < 0.3
    assert np.abs(back[0]).mean() <= np.abs(back[1]).mean() + 0.2


@pytest.mark.parametrize("matrix, sws, full", MATRICES)
def test_yuv_to_rgb_agrees_with_swscale(photo, matrix, sws, full):
    planes = _sws_planes(photo, sws, full)
    ours, theirs = yuv420_to_rgb(planes, matrix, full).astype(int), _sws_rgb(planes, sws, full).astype(int)
    assert ours.shape == photo.shape
    assert abs((ours - theirs).mean()) < 0.2  # no bias: swscale's fast path reads 1-2 levels dark
    assert np.abs(ours - theirs).mean() < 0.6
    assert np.abs(ours - photo.astype(int)).mean() < 2.0  # and the photo comes back


def test_known_codes_by_hand():
    # Limited range: Y 16 is black, 235 white; Y 126 grey is (126 - 16) * 255 / 219 = 128.1.
    for matrix in (6, 1):
        for y, rgb in ((16, 0), (235, 255), (126, 128)):
            planes = np.full((6, 4), 128, np.uint8)
            planes[:4] = y
            assert (yuv420_to_rgb(planes, matrix, False) == rgb).all()
    # Full-range BT.709 red: Y = 0.2126 * 255 = 54.2, Cb = 128 - 0.2126 / 0.9278 / 2 * 255 = 98.8,
    # Cr = 128 + 127.5 = 255.5 -> 255.
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    planes = rgb_to_yuv420(red, 1, True)
    assert (planes[:4] == 54).all() and (planes[4:].reshape(-1)[:4] == 99).all() and (planes[4:].reshape(-1)[4:] == 255).all()


def test_frames_it_does_not_cover_go_back_to_swscale():
    assert yuv420_to_rgb(np.zeros((9, 5), np.uint8), 6, False) is None  # odd sides
    assert rgb_to_yuv420(np.zeros((5, 4, 3), np.uint8), 6, False) is None
    assert yuv420_to_rgb(np.zeros((6, 4), np.uint8), 0, False) is None  # RGB "matrix": not a YUV one
    assert rgb_to_yuv420(np.zeros((4, 4, 3), np.uint8), 8, False) is None  # YCgCo


def test_a_real_frame_goes_round_the_writer_and_reader_unchanged(photo, tmp_path):
    # Encode losslessly through veil's writer, read back through veil's reader: the 4:2:0 round trip only.
    from veil.media.read import read_frames
    from veil.media.write import EncodeOptions, write_frames

    out = tmp_path / "x.mkv"
    write_frames(out, [photo] * 2, 24, options=EncodeOptions(crf=0))
    back = next(read_frames(out)).astype(int)
    assert np.abs((back - photo).mean(axis=(0, 1))).max() < 0.3
    assert np.abs(back - photo).mean() < 1.0
