"""Privacy fails closed when something fails now and then, not only always: a detector that raises
on one frame in five, a protection that raises on some frames, a recognizer that gives out
mid-run, an encoder that crashes. In every case no output frame shows a face (judged by another
detector on the output) and the summary counts what was masked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from veil.cli import app
from veil.detect import get_detector
from veil.detect.base import _REGISTRY, register_detector
from veil.media.read import read_frames
from veil.pipeline import ProtectOptions, protect_video
from veil.protect import get_protector

runner = CliRunner()
FAIL_EVERY = 5  # the flaky detector raises on its 5th, 10th, ... call


@pytest.fixture(scope="module")
def clip(media):
    return media("single_face.mp4")  # 72 frames, one face on every one


@pytest.fixture(scope="module")
def judge():
    return get_detector("mtcnn", detect_size=None)  # not the detector veil protected with


def _faces_shown(frames, judge) -> int:
    return sum(len(judge.detect(f)) for f in frames)


def _black(frames) -> list[int]:
    return [i for i, f in enumerate(frames) if f.max() <= 16]  # masked whole, up to codec rounding


@pytest.fixture
def flaky_detector():
    calls = []

    @register_detector("flaky-for-test")
    class Flaky:
        name = "flaky-for-test"

        def __init__(self, **options: object) -> None:
            self.inner = get_detector("centerface", **options)

        def detect(self, image):
            calls.append(len(calls))
            if len(calls) % FAIL_EVERY == 0:
                raise RuntimeError("simulated intermittent detector failure")
            return self.inner.detect(image)

    yield calls
    del _REGISTRY["flaky-for-test"]


@pytest.mark.parametrize("every", [1, 2, 4])
def test_a_detector_failing_one_frame_in_five_leaves_no_face_shown(clip, judge, flaky_detector, tmp_path, every):
    summary = protect_video(clip, tmp_path / "out.mp4", ProtectOptions(detector="flaky-for-test", detect_every=every))
    frames = list(read_frames(tmp_path / "out.mp4"))
    assert len(frames) == 72 and len(flaky_detector) == summary.frames_detected
    # The frames masked whole: each failed detection's frame and the skipped frames on both sides,
    # which leaned on it (the tracker had nothing there to fill from).
    detected = [i for i in range(72) if i % every == 0][:summary.frames_detected]
    failed = [f for n, f in enumerate(detected) if (n + 1) % FAIL_EVERY == 0]
    expected = sorted({i for f in failed for i in range(f - every + 1, f + every) if 0 <= i < 72})
    assert failed and _black(frames) == expected
    assert summary.frames_masked_on_error == len(expected)
    assert _faces_shown(frames[::2], judge) == 0


class _FlakyBlur:
    """Blur that raises on frames 3, 10, 17, ...: a protection failing now and then."""

    def __init__(self) -> None:
        self.inner = get_protector("blur")

    def __call__(self, image, faces, state):
        if state.frame_index % 7 == 3:
            raise RuntimeError("simulated protection failure")
        return self.inner(image, faces, state)


def test_a_protection_failing_on_some_frames_masks_them_whole(clip, judge, tmp_path):
    summary = protect_video(clip, tmp_path / "out.mp4", ProtectOptions(), protector=_FlakyBlur())
    frames = list(read_frames(tmp_path / "out.mp4"))
    failed = [i for i in range(72) if i % 7 == 3]
    assert _black(frames) == failed and summary.frames_masked_on_error == len(failed)
    assert _faces_shown(frames[::2], judge) == 0


def test_a_protection_failure_can_stop_the_run(clip, tmp_path):
    from veil.errors import ProtectionError

    with pytest.raises(ProtectionError, match="protection failed on frame 3"):
        protect_video(clip, tmp_path / "out.mp4", ProtectOptions(on_detection_error="stop"), protector=_FlakyBlur())
    assert not list(tmp_path.iterdir())  # no output, no temporary file


def test_an_encoder_crash_mid_video_leaves_no_file_and_exit_1(clip, tmp_path, monkeypatch):
    from veil.media.write import VideoWriter

    real_write, written = VideoWriter.write, []

    def crashing(self, image, pts=None):
        if len(written) == 30:
            raise MemoryError("simulated crash of the encode thread")
        written.append(pts)
        return real_write(self, image, pts)

    monkeypatch.setattr(VideoWriter, "write", crashing)
    result = runner.invoke(app, ["protect", str(clip), "-o", str(tmp_path / "out.mp4"), "-q"])
    assert result.exit_code == 1 and len(written) == 30
    assert "simulated crash" in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-written is left where a viewer could find it


def test_a_recognizer_failing_mid_run_protects_the_known_person_from_then_on(media, judge, tmp_path, monkeypatch):
    """--keep-face with a recognizer that works for the first frames, then raises: the known
    person is kept at first, then protected; nobody is ever left visible on a failed frame."""
    import veil.keep as keep

    clip = media("single_face.mp4")
    reference = tmp_path / "me.png"
    first = next(iter(read_frames(clip)))
    import cv2

    cv2.imwrite(str(reference), cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    known = keep.known_faces((str(reference),), keep.KEEP_DISTANCE)
    calls = []

    def failing_after_ten(image, landmarks):
        calls.append(1)
        if len(calls) > 10:
            raise RuntimeError("recognizer lost")
        return describe(image, landmarks)

    describe = known.describe
    monkeypatch.setattr(known, "describe", failing_after_ten)
    monkeypatch.setattr(ProtectOptions, "build_known", lambda self: known)
    summary = protect_video(clip, tmp_path / "out.mp4", ProtectOptions(method="solid", keep_faces=(str(reference),)))
    frames = list(read_frames(tmp_path / "out.mp4"))
    kept = [i for i, n in enumerate(summary.kept_per_frame) if n]
    assert kept and summary.recognizer_failures == summary.frames_detected - 10
    # Kept only while the recognizer answered (detections 0..9 on frames 0..18, every 2nd frame).
    assert max(kept) <= 18
    assert _faces_shown(frames[20::2], judge) == 0
    report = summary.to_dict()
    assert report["recognizer_failures"] > 0 and json.dumps(report)


class _Interrupted:
    """A video of which only frames 3, 9, 15, ... come out whole; the others come out masked (a
    damaged file, or a live run's late frames). Each frame shown is off the --detect-every cadence
    and has masked frames on both sides: no detection before or after it to lean on."""

    def __init__(self, clip) -> None:
        from dataclasses import replace

        from veil.media.damage import Damage
        from veil.media.read import VideoReader

        with VideoReader(clip) as reader:
            self.info = reader.info
            self.frames = [replace(f, damaged=f.index % 6 != 3) for f in reader]
        self.damage = Damage()

    def __iter__(self):
        return iter(self.frames)


@pytest.mark.parametrize("every", [2, 4])
def test_the_first_frame_shown_after_masked_ones_is_always_detected(clip, judge, every):
    """Frames masked unseen (damage, lateness) push nothing to the tracker: the first frame shown
    after them must be detected whatever the --detect-every cadence, or its face is not covered."""
    from veil.detect import get_detector as detector_named
    from veil.pipeline import Summary, protect_frames

    shown: list[np.ndarray] = []

    class Collect:
        def write(self, image, pts=None):
            shown.append(image)

    source = _Interrupted(clip)
    options = ProtectOptions(detect_every=every)
    protect_frames(source, detector_named("centerface"), get_protector("blur"), Collect(), options,
                   Summary(input="x", output=None, method="blur", detector="centerface"))
    visible = [f for f, src in zip(shown, source.frames) if not src.damaged]
    assert len(shown) == 72 and len(visible) == 12
    assert _faces_shown(visible, judge) == 0
