"""Long videos cut at keyframes, protected in parallel and joined: same frames, times, sound; no face at a cut."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from veil.batch import plan_jobs, run_jobs
from veil.batch.segments import join_parts, plan_segments, protect_segment
from veil.detect import get_detector
from veil.faces import Faces
from veil.media.read import read_frames
from veil.pipeline import ProtectOptions

OPTIONS = ProtectOptions(method="blur", detect_size=320)  # the face is large: a quarter of the work


@pytest.fixture(scope="module")
def gop_clip(media, tmp_path_factory) -> Path:
    """The real 72-frame clip re-encoded with a keyframe every 24 frames (0, 24, 48), sound copied."""
    src = media("single_face.mp4")
    dst = tmp_path_factory.mktemp("gop") / "face.mp4"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=vin.average_rate, options={"g": "24", "keyint_min": "24",
                                                                         "sc_threshold": "0", "crf": "12"})
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.time_base = vin.time_base
        aout = out.add_stream_from_template(ain)
        for packet in inp.demux(vin, ain):
            if packet.stream is ain:
                if packet.dts is not None and packet.size:
                    packet.stream = aout
                    out.mux(packet)
                continue
            for frame in packet.decode():
                out.mux(vout.encode(frame))
        out.mux(vout.encode(None))
    return dst


def _times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.pts * f.time_base), 6) for f in c.decode(c.streams.video[0])]


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_plan_cuts_at_keyframes(gop_clip):
    segments = plan_segments(gop_clip, 0.5)
    with av.open(str(gop_clip)) as c:
        time_base = c.streams.video[0].time_base
    times = _times(gop_clip)
    assert [round(float(s.start_pts * time_base), 6) for s in segments] == [times[0], times[24], times[48]]
    pre = OPTIONS.tracker.max_missing + OPTIONS.tracker.lookahead + 2  # frames of context before a cut
    assert [s.context_index for s in segments] == [0, 24 - pre, 48 - pre]
    assert [s.end_pts for s in segments] == [segments[1].start_pts, segments[2].start_pts, None]
    (whole,) = plan_segments(gop_clip, 10.0)  # shorter than a segment: one piece, nothing to cut
    assert (whole.start_pts, whole.end_pts, whole.seek_pts) == (segments[0].start_pts, None, None)


def test_split_protect_join_keeps_frames_times_and_sound(gop_clip, tmp_path):
    detector, protector = OPTIONS.build_detector(), OPTIONS.build_protector()
    parts = []
    for s in plan_segments(gop_clip, 0.5):
        part = s.with_part(tmp_path / f"part{s.index}.mp4")
        summary = protect_segment(gop_clip, part, OPTIONS, detector, protector)
        assert summary.frames == 24 and min(summary.faces_per_frame) >= 1
        parts.append(part.part)
    out = tmp_path / "joined.mp4"
    assert join_parts(gop_clip, parts, out) == 1
    assert _times(out) == _times(gop_clip)  # 72 frames, the source's timestamps
    joined = list(read_frames(out))
    pieces = [f for p in parts for f in read_frames(p)]
    assert len(joined) == 72 and all(np.array_equal(a, b) for a, b in zip(joined, pieces))  # lossless join
    assert _audio_packets(out) == _audio_packets(gop_clip)  # sound copied once, packet for packet


def test_batch_with_segments_shows_no_face_at_the_cuts(gop_clip, tmp_path):
    jobs, _ = plan_jobs([gop_clip.parent], tmp_path / "safe")
    report = run_jobs(jobs, OPTIONS, manifest=tmp_path / "safe", segment_seconds=0.5, show_progress=False)
    assert report.exit_code == 0, report.errors
    (summary,) = report.summaries
    assert summary.frames == 72 and len(summary.faces_per_frame) == 72 and summary.audio_streams_copied == 1
    out = tmp_path / "safe" / "face.mp4"
    assert _times(out) == _times(gop_clip)
    assert not (tmp_path / "safe" / ".veil-parts").exists() or not any((tmp_path / "safe" / ".veil-parts").rglob("*.mp4"))
    # A different, thorough detector on the frames around each cut.
    thorough = get_detector("mtcnn", detect_size=None, min_face=40)
    frames = list(read_frames(out))
    near = [i for cut in (24, 48) for i in range(cut - 2, cut + 2)]
    assert all(summary.faces_per_frame[i] >= 1 for i in near)
    assert [i for i in near if len(thorough.detect(frames[i]))] == []


class _MissesAfterCuts:
    """The real detector, blind on the frames just after each cut (a turned head, motion blur)."""

    name = "misses"

    def __init__(self, inner, source: list[np.ndarray], blind: set[int]) -> None:
        self.inner, self.blind = inner, blind
        self.index = {hashlib.sha1(f.tobytes()).hexdigest(): i for i, f in enumerate(source)}

    def detect_batch(self, images):
        found = self.inner.detect_batch(images)
        return [Faces.empty() if self.index.get(hashlib.sha1(im.tobytes()).hexdigest()) in self.blind else f
                for im, f in zip(images, found)]

    def detect(self, image):
        return self.detect_batch([image])[0]


def test_tracks_are_handed_across_the_cut(gop_clip, tmp_path):
    source = list(read_frames(gop_clip))
    # More frames than the tracker holds back: drawing the face back from after them cannot save them.
    blind = {i for cut in (24, 48) for i in range(cut, cut + OPTIONS.tracker.lookahead + 2)}
    detector = _MissesAfterCuts(OPTIONS.build_detector(), source, blind)
    protector = OPTIONS.build_protector()
    segments = plan_segments(gop_clip, 0.5)
    handed = [protect_segment(gop_clip, s.with_part(tmp_path / f"h{s.index}.mp4"), OPTIONS, detector, protector)
              for s in segments]
    faces = [n for s in handed for n in s.faces_per_frame]
    assert [i for i in sorted(blind) if faces[i] == 0] == []  # the track from before the cut covers them
    # Cut without the frames before the cut, and the face shows on the blind frames.
    naive = [protect_segment(gop_clip, replace(s, context_pts=s.start_pts, context_index=24 * s.index,
                                               part=tmp_path / f"n{s.index}.mp4"), OPTIONS, detector, protector)
             for s in segments]
    faces = [n for s in naive for n in s.faces_per_frame]
    assert [i for i in sorted(blind) if faces[i] == 0] != []
