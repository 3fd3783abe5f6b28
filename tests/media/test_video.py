"""Video I/O: exact frames after a lossless round trip, audio copied byte for byte, timestamps,
metadata, odd sizes, rotation, and bad input."""

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from clips import synthetic_frames

import veil
from veil.detect import get_detector
from veil.errors import OutputError, VideoOpenError
from veil.media.read import VideoReader, probe, read_frames
from veil.media.write import EncodeOptions, write_frames

LOSSLESS = EncodeOptions(codec="ffv1", crf=None, preset=None, pix_fmt="bgr0")


def _audio_packets(path):
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts, p.dts) for p in c.demux(c.streams.audio[0]) if p.size]


def _video_pts(path):
    with av.open(str(path)) as c:
        return [f.pts for f in c.decode(video=0)]


def test_lossless_round_trip_gives_identical_frames(clip, tmp_path):
    frames = synthetic_frames(10)
    src = clip("in.mkv", frames)
    assert [f.tolist() for f in read_frames(src)] == [f.tolist() for f in frames]
    out = write_frames(tmp_path / "out.mkv", read_frames(src), Fraction(25), options=LOSSLESS)
    got = list(read_frames(out))
    assert len(got) == len(frames)
    for a, b in zip(got, frames):
        np.testing.assert_array_equal(a, b)


def test_protect_copies_audio_packets_byte_for_byte(clip, tmp_path):
    src = clip("tone.mp4", synthetic_frames(25), codec="libx264", pix_fmt="yuv420p", tone_hz=440.0)
    summary = veil.protect(src, tmp_path / "out.mp4", method="blur")
    assert summary.audio_streams_copied == 1
    before, after = _audio_packets(src), _audio_packets(tmp_path / "out.mp4")
    assert len(before) > 20
    assert after == before


def test_no_audio_drops_the_sound(clip, tmp_path):
    src = clip("tone.mp4", synthetic_frames(10), codec="libx264", pix_fmt="yuv420p", tone_hz=440.0)
    veil.protect(src, tmp_path / "out.mp4", keep_audio=False)
    assert probe(tmp_path / "out.mp4").audio_streams == 0


def test_variable_frame_rate_timestamps_are_kept(clip, tmp_path):
    pts = [0, 33, 80, 100, 167, 200, 290, 300, 333, 480]
    src = clip("vfr.mkv", synthetic_frames(len(pts)), pts=pts, time_base=Fraction(1, 1000))
    veil.protect(src, tmp_path / "out.mkv", codec="ffv1", crf=None, preset=None, pix_fmt="bgr0")
    assert _video_pts(src) == pts
    assert _video_pts(tmp_path / "out.mkv") == pts


def test_frame_rate_and_count_are_kept(media, tmp_path):
    src = media("WolfgangLanger_Pexels.mp4")
    veil.protect(src, tmp_path / "out.mp4", method="solid")
    a, b = probe(src), probe(tmp_path / "out.mp4")
    assert b.fps == a.fps == Fraction(24000, 1001)
    assert b.frame_count == a.frame_count == 472
    assert _video_pts(tmp_path / "out.mp4") == _video_pts(src)


@pytest.mark.parametrize("keep", [False, True])
def test_metadata_dropped_unless_kept(clip, tmp_path, keep):
    meta = {"title": "holiday", "comment": "Pixel 7 Pro", "artist": "someone"}
    src = clip("meta.mp4", synthetic_frames(6), codec="libx264", pix_fmt="yuv420p", metadata=meta)
    with av.open(str(src)) as c:
        assert c.metadata.get("title") == "holiday"
    veil.protect(src, tmp_path / "out.mp4", keep_metadata=keep)
    with av.open(str(tmp_path / "out.mp4")) as c:
        tags = dict(c.metadata)
        tags.update(c.streams.video[0].metadata)
    if keep:
        assert tags.get("title") == "holiday" and tags.get("comment") == "Pixel 7 Pro"
    else:
        assert not {"title", "comment", "artist", "encoder", "creation_time"} & set(tags)


def test_odd_size_is_kept_without_stretching(clip, tmp_path):
    frames = synthetic_frames(5, width=97, height=63)
    src = clip("odd.mkv", frames)
    out = veil.protect(src, tmp_path / "out.mp4")
    info = probe(out.output)
    assert (info.width, info.height) == (97, 63)
    got = next(read_frames(out.output))
    assert np.abs(got.astype(int) - frames[0].astype(int)).mean() < 6  # codec noise only


def test_rotation_is_applied_so_output_displays_the_same(clip, tmp_path):
    frames = synthetic_frames(4, width=80, height=48)
    src = clip("rot.mkv", frames, rotation=90)
    with VideoReader(src) as reader:
        assert reader.info.rotation == 90
        assert (reader.info.width, reader.info.height) == (48, 80)
        got = [f.image for f in reader]
    np.testing.assert_array_equal(got[0], np.rot90(frames[0], k=1))


def test_a_rotated_phone_video_is_protected_upright(media, clip, tmp_path):
    """Stored sideways with a 90 degree display matrix, as phones record: protect finds the face in
    the upright picture and writes an upright video (no matrix left to apply) with the face hidden."""
    upright = [f for _, f in zip(range(24), read_frames(media("single_face.mp4")))]
    src = clip("phone.mp4", [np.ascontiguousarray(np.rot90(f, k=-1)) for f in upright], rotation=90)
    summary = veil.protect(src, tmp_path / "out.mp4")
    with VideoReader(tmp_path / "out.mp4") as reader:
        assert reader.info.rotation == 0 and (reader.info.width, reader.info.height) == (640, 360)
        out = [f.image for f in reader]
    assert summary.faces == 24 and len(out) == 24
    judge = get_detector("mtcnn", detect_size=None)
    assert sum(len(judge.detect(f)) for f in out[::4]) == 0
    # upright: away from the face the picture is the original's, up to the encoder
    box = judge.detect(upright[0]).boxes[0].astype(int)
    keep = np.ones((360, 640), bool)
    keep[max(box[1] - 60, 0):box[3] + 60, max(box[0] - 60, 0):box[2] + 60] = False
    assert np.abs(out[0][keep].astype(int) - upright[0][keep].astype(int)).mean() < 4


@pytest.mark.parametrize("content", [b"", b"this is not a video\n", b"\x00" * 4096])
def test_unreadable_files_raise_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoOpenError, match="bad.mp4"):
        probe(path)


def test_truncated_file_is_an_input_error(media, tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(media("single_face.mp4").read_bytes()[:60_000])
    with pytest.raises(VideoOpenError):
        veil.protect(path, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts = 44100, 0
        for p in list(s.encode(af)) + list(s.encode(None)):
            out.mux(p)
    with pytest.raises(VideoOpenError, match="no video stream"):
        probe(path)


def test_input_is_never_overwritten(clip):
    src = clip("same.mkv")
    before = src.read_bytes()
    with pytest.raises(OutputError, match="input itself"):
        veil.protect(src, src)
    assert src.read_bytes() == before


def test_failed_write_leaves_no_file(clip, tmp_path):
    src = clip("x.mkv")
    with pytest.raises(OutputError):
        veil.protect(src, tmp_path / "out.mp4", codec="no-such-codec")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mkv"]


def _colour_bars(width=128, height=72):
    colours = [(235, 235, 235), (235, 235, 16), (16, 235, 235), (16, 235, 16), (235, 16, 235), (235, 16, 16),
               (16, 16, 235), (40, 40, 40)]
    bars = np.repeat(np.array(colours, np.uint8)[None], height, axis=0)
    return np.ascontiguousarray(np.repeat(bars, width // len(colours), axis=1))


# (codec, pixel format, primaries, transfer, matrix, range): BT.709 HD; an HLG phone video
# (BT.2020, 10 bits); full-range BT.601.
COLOURS = [("libx264", "yuv420p", 1, 1, 1, 1), ("libx265", "yuv420p10le", 9, 18, 9, 1),
           ("libx264", "yuv420p", 6, 6, 6, 2)]


@pytest.mark.parametrize("codec, pix_fmt, primaries, transfer, matrix, colour_range", COLOURS)
def test_colour_description_is_kept(tmp_path, codec, pix_fmt, primaries, transfer, matrix, colour_range):
    bars = _colour_bars()
    src = tmp_path / "bars.mp4"
    with av.open(str(src), "w") as out:
        options = {"x265-params": "log-level=error:lossless=1"} if codec == "libx265" else {"qp": "0"}
        stream = out.add_stream(codec, rate=24, options=options)
        stream.width, stream.height, stream.pix_fmt = bars.shape[1], bars.shape[0], pix_fmt
        ctx = stream.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = primaries, transfer, matrix, colour_range
        sws = {1: 1, 6: 5, 9: 9}[matrix]
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(bars, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=sws, dst_color_range=colour_range)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    veil.protect(src, tmp_path / "out.mp4")
    with av.open(str(tmp_path / "out.mp4")) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range) == (
            primaries, transfer, matrix, colour_range)
    # Each file decoded as its own description says: the same colours inside each bar (a wrong
    # matrix or range moves saturated colours by tens of levels; bar edges blur in 4:2:0).
    inside = np.s_[:, [16 * i + k for i in range(8) for k in range(4, 12)]]
    before, after = next(read_frames(src)).astype(int), next(read_frames(tmp_path / "out.mp4")).astype(int)
    assert np.abs(before - bars)[inside].max() <= 3
    assert np.abs(after - before)[inside].mean() < 2 and np.abs(after - before)[inside].max() <= 8


def test_a_stream_that_changes_size_midway_is_written_at_its_first_size(load_rgb, tmp_path):
    # MPEG-TS files join by concatenation: a 640x360 part, then a 320x180 one (as a broadcast or a
    # recorded video call switches resolution). Every frame is protected, at the first size.
    face = load_rgb("0-f1-su-ph.jpg")
    parts = []
    for k, (w, h) in enumerate([(640, 360), (320, 180)]):
        path = tmp_path / f"part{k}.ts"
        with av.open(str(path), "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for i in range(8):
                image = np.zeros((h, w, 3), np.uint8)
                image[:, w // 4:w // 4 + h] = cv2.resize(face, (h, h), interpolation=cv2.INTER_AREA)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        parts.append(path.read_bytes())
    src = tmp_path / "joined.ts"
    src.write_bytes(b"".join(parts))
    summary = veil.protect(src, tmp_path / "out.mp4", detect_every=1)
    assert summary.frames == 16 and summary.faces_per_frame == [1] * 16
    frames = list(read_frames(tmp_path / "out.mp4"))
    assert len(frames) == 16 and {f.shape for f in frames} == {(360, 640, 3)}


def test_webm_comes_back_as_webm_with_its_sound(clip, tmp_path):
    # WebM holds only VP8, VP9 and AV1: the default encoder follows the container.
    src = clip("call.webm", synthetic_frames(12), codec="libvpx-vp9", pix_fmt="yuv420p", tone_hz=440,
               audio_codec="libopus")
    summary = veil.protect(src, None)
    out = tmp_path / "call_protected.webm"
    assert summary.output == str(out) and summary.audio_streams_copied == 1
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
    assert _audio_packets(out) == _audio_packets(src)
    assert len(list(read_frames(out))) == 12
