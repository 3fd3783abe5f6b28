"""When the frame loop looks at the whole frame and when only around the tracked faces, and that
looking around loses nothing: a face walking into view is covered from its first frame, judged by
another network (MTCNN) on the written video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from veil.detect import get_detector
from veil.detect.centerface import CenterFace
from veil.detect.track import TrackerConfig
from veil.media.read import read_frames
from veil.pipeline import ProtectOptions, protect_video


class Recording:
    """CenterFace, recording which frame each look was at and of which kind."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = CenterFace()
        self.looks: list[str] = []
        self.regions: list[np.ndarray] = []

    def detect(self, image):
        self.looks.append("whole")
        return self.inner.detect(image)

    def detect_regions(self, image, regions, sizes):
        self.looks.append("around")
        self.regions.append(regions)
        return self.inner.detect_regions(image, regions, sizes)


@pytest.fixture(scope="module")
def judge():
    return get_detector("mtcnn", detect_size=None)


def test_whole_looks_every_lookahead_plus_one_frames_and_around_the_face_between(media, tmp_path):
    det = Recording()
    summary = protect_video(media("single_face.mp4"), tmp_path / "out.mp4", ProtectOptions(), detector=det)
    # detect_every 2, lookahead 15: whole at 0, 16, 32, ...; around the tracked face at 2, 4, ..., 14, 18, ...
    assert det.looks == (["whole"] + ["around"] * 7) * 4 + ["whole"] + ["around"] * 3
    assert summary.frames_detected == 36 and summary.frames_detected_whole == 5
    assert all(len(r) == 1 for r in det.regions)  # the one face's region
    assert summary.faces_per_frame == [1] * 72 and summary.tracks == 1
    stages = summary.stage_ms
    assert set(stages) == {"decode", "detect", "track", "protect", "encode"}
    assert all(v > 0 for v in stages.values())


def test_no_track_regions_looks_at_the_whole_frame_every_time(media, tmp_path):
    det = Recording()
    options = ProtectOptions(track_regions=False, detect_every=1, tracker=TrackerConfig(lookahead=3))
    summary = protect_video(media("single_face.mp4"), tmp_path / "out.mp4", options, detector=det)
    assert det.looks == ["whole"] * 72 and summary.frames_detected_whole == 72


def _walk_in(photo: np.ndarray, frames: int = 40) -> list[np.ndarray]:
    """A face sliding into a grey 640x360 frame from the right, 12 pixels a frame (no cut)."""
    face = cv2.resize(photo, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)[:200, :200]
    out = []
    for t in range(frames):
        frame = np.full((360, 640, 3), 120, np.uint8)
        x = 640 - 12 * t
        visible = face[:, :max(0, min(200, 640 - x))]
        if x < 640 and visible.size:
            frame[80:80 + visible.shape[0], max(x, 0):max(x, 0) + visible.shape[1]] = visible
        out.append(frame)
    return out


def test_a_face_walking_into_view_is_covered_from_its_first_frame(clip, load_rgb, judge, tmp_path):
    src = clip("walk.mkv", _walk_in(load_rgb("obama.jpg")))
    det = Recording()
    protect_video(src, tmp_path / "out.mp4", ProtectOptions(), detector=det)
    assert "around" in det.looks  # the schedule above was at work
    originals, protected = list(read_frames(src)), list(read_frames(tmp_path / "out.mp4"))
    seen = [i for i, f in enumerate(originals) if len(judge.detect(f))]
    assert len(seen) > 15  # the judge sees the face on most frames, from its first few
    assert sum(len(judge.detect(protected[i])) for i in seen) == 0
