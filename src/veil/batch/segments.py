"""Long videos in parallel: cut at keyframes, protect each segment, join the parts without re-encoding.

A segment is a range of frames in display order that starts at a keyframe of the source. Its
worker decodes a little before and after the range (from the previous keyframe) and runs detection
and tracking over those extra frames too, writing only the frames of its range:

- ``pre`` frames before the cut (``max_missing + lookahead + 2``): a face the detector loses right
  after the cut is still held by its track, exactly as in one uninterrupted run;
- ``post`` frames after the cut (``lookahead + max_missing``): a face first detected just after the
  cut is drawn back over the last frames before it (the tracker's look-back), and a track lost over
  the cut is interpolated across it.

So the tracks are handed across every boundary and no face shows at a cut. Each part is encoded
with the source's timestamps and time base; `join_parts` copies the parts' packets one after the
other into the output (the timestamps are the source's, so nothing is shifted) and copies the
audio once, from the source.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from veil.detect import Detector
from veil.detect.track import TrackerConfig
from veil.errors import OutputError, VideoOpenError
from veil.media.damage import Damage, decode_video
from veil.media.metadata import video_metadata_dropped
from veil.media.outputs import discard, publish, temporary_beside
from veil.media.read import Frame, VideoInfo, probe, upright_rgb
from veil.media.write import EncodeOptions, VideoWriter, check_output_path
from veil.pipeline import ProtectOptions, Summary, protect_frames
from veil.pipeline.files import reviewed
from veil.protect import Protector

__all__ = ["Segment", "SegmentFrames", "plan_segments", "protect_segment", "join_parts", "merge_summaries"]


@dataclass(frozen=True)
class Segment:
    """Frames with ``start_pts <= pts < end_pts`` (end None: to the end), in the source's time base.

    Decoding starts at the keyframe `seek_pts` (None: the file's start); detection and tracking run
    from `context_pts` (the first pre-roll frame, global frame index `context_index`) up to
    `context_end_pts` (None: the end), and only the segment's own frames are written to `part`.
    """

    index: int
    start_pts: int
    end_pts: int | None
    seek_pts: int | None
    context_pts: int
    context_index: int
    context_end_pts: int | None
    part: Path | None = None

    def with_part(self, part: Path) -> Segment:
        return replace(self, part=part)

    def contains(self, pts: int) -> bool:
        """Whether the frame at `pts` is the segment's own (not one of its context frames)."""
        return pts >= self.start_pts and (self.end_pts is None or pts < self.end_pts)


def plan_segments(src: str | os.PathLike, seconds: float, tracker: TrackerConfig = TrackerConfig()) -> list[Segment]:
    """Cut points at keyframes, at least `seconds` apart; [] when the video cannot be cut.

    Reads packets only (no decoding): fast even for long files.
    """
    pre = tracker.max_missing + tracker.lookahead + 2
    post = tracker.lookahead + tracker.max_missing
    try:
        container = av.open(str(src))
    except (av.FFmpegError, UnicodeDecodeError, ValueError):
        return []
    with container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        time_base = Fraction(stream.time_base)
        pts, keys = [], []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return []  # no timestamps to cut at
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
    order = sorted(pts)
    if len(set(order)) != len(order) or not keys:
        return []
    index_of = {p: i for i, p in enumerate(order)}
    cuts = [order[0]]
    for key in sorted(keys):
        if key > cuts[-1] and (key - cuts[-1]) * time_base >= seconds and (order[-1] - key) * time_base >= seconds / 2:
            cuts.append(key)
    key_indices = sorted(index_of[k] for k in keys)
    segments = []
    for k, start in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else None
        first = index_of[start]
        context_index = max(0, first - pre)
        seek = max((i for i in key_indices if i <= context_index), default=0)
        last = (index_of[end] if end is not None else len(order)) + post
        segments.append(Segment(
            index=k, start_pts=start, end_pts=end,
            seek_pts=None if seek == 0 else order[seek],
            context_pts=order[context_index], context_index=context_index,
            context_end_pts=None if end is None or last >= len(order) else order[last]))
    return segments


class SegmentFrames:
    """The frames of a segment's context, upright, with their global indices (a `FrameSource`).

    The frame count is left unknown (0): progress counts frames as they come.
    """

    def __init__(self, src: Path, segment: Segment, info: VideoInfo, tolerate_damage: bool = False) -> None:
        self.src, self.segment, self.info = src, segment, replace(info, frame_count=0)
        self.tolerate_damage, self.damage = tolerate_damage, Damage()

    def __iter__(self) -> Iterator[Frame]:
        segment = self.segment
        with av.open(str(self.src)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if segment.seek_pts is not None:
                container.seek(segment.seek_pts, stream=stream, backward=True, any_frame=False)
            index = segment.context_index
            for frame, damaged in decode_video(container, stream, self.damage, tolerate=self.tolerate_damage):
                if frame.pts is None or frame.pts < segment.context_pts:
                    continue
                if segment.context_end_pts is not None and frame.pts >= segment.context_end_pts:
                    return
                out = Frame(image=upright_rgb(frame, self.info), pts=frame.pts, time_base=Fraction(frame.time_base),
                            index=index, damaged=damaged)
                if damaged and segment.contains(frame.pts):  # context frames count in their own segment
                    self.damage.add_frame(out.time_s)
                yield out
                index += 1


class _SegmentWriter:
    """Passes on only the frames of the segment; remembers which of the frames it was given it kept."""

    def __init__(self, writer: VideoWriter, segment: Segment) -> None:
        self.writer, self.segment, self.kept = writer, segment, []

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        inside = self.segment.contains(pts)
        self.kept.append(inside)
        if inside:
            self.writer.write(image, pts)


def protect_segment(src: str | os.PathLike, segment: Segment, options: ProtectOptions, detector: Detector,
                    protector: Protector, progress=None) -> Summary:
    """Protect one segment of `src` into `segment.part` (video only; the join adds the audio)."""
    src = Path(src)
    info = probe(src, options.max_pixels)
    summary = Summary(input=str(src), output=str(segment.part), method=options.method, detector=detector.name,
                      width=info.width, height=info.height, fps=str(info.fps))
    encode = replace(options.encode, keep_audio=False, keep_metadata=False)
    writer = VideoWriter(segment.part, width=info.width, height=info.height, fps=info.fps,
                         time_base=info.time_base, options=encode, colour=info.colour)
    gate = _SegmentWriter(writer, segment)
    try:
        frames = SegmentFrames(src, segment, info, tolerate_damage=options.on_damage != "stop")
        protect_frames(frames, detector, protector, gate, options, summary, progress, review=reviewed(src, options))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    keep = gate.kept
    summary.faces_per_frame = [n for n, k in zip(summary.faces_per_frame, keep) if k]
    summary.kept_per_frame = [n for n, k in zip(summary.kept_per_frame, keep) if k]
    summary.frames = sum(keep)
    if summary.frames == 0:
        raise VideoOpenError(f"{str(src)!r}: segment {segment.index} decoded no frame")
    if segment.index == 0:  # what the joined file will lack of the source, said once
        with av.open(str(src)) as source:
            summary.metadata_dropped = video_metadata_dropped(source, keep_metadata=options.encode.keep_metadata,
                                                              keep_audio=options.encode.keep_audio)
    return summary


def join_parts(src: str | os.PathLike, parts: tuple[Path, ...] | list[Path], dst: str | os.PathLike,
               encode: EncodeOptions = EncodeOptions()) -> int:
    """Copy the parts' video packets, in order, and the source's audio into `dst` (atomically).

    Returns the number of audio streams copied.
    """
    src, dst = Path(src), Path(dst)
    check_output_path(src, dst)
    tmp = temporary_beside(dst)
    source = av.open(str(src))
    opened = [av.open(str(p)) for p in parts]
    try:
        out = av.open(str(tmp), "w", options={"fflags": "+bitexact"})
        with out:
            video = out.add_stream_from_template(opened[0].streams.video[0])
            audio_map = {}
            if encode.keep_audio:
                for stream in source.streams.audio:
                    audio_map[stream.index] = out.add_stream_from_template(stream)
                    if not encode.keep_metadata:
                        audio_map[stream.index].metadata.clear()
            if encode.keep_metadata:
                out.metadata.update(source.metadata)
            audio = (p for p in source.demux(*source.streams.audio) if p.dts is not None and p.size > 0) \
                if audio_map else iter(())
            waiting = next(audio, None)
            last_dts = None
            for part in opened:
                for packet in part.demux(part.streams.video[0]):
                    if packet.size == 0 or packet.dts is None:
                        continue
                    if last_dts is not None and packet.dts <= last_dts:
                        # Each part starts its decode clock a few frames early (B-frame delay); close the
                        # gap so decode times stay increasing. Presentation times are not touched.
                        packet.dts = last_dts + 1
                        if packet.dts > packet.pts:
                            raise OutputError(f"cannot join the segments of {str(src)!r}: the time base is "
                                              "too coarse; run it without segments")
                    last_dts = packet.dts
                    seconds = float(packet.dts * packet.time_base)
                    while waiting is not None and float(waiting.dts * waiting.time_base) <= seconds:
                        waiting.stream = audio_map[waiting.stream.index]
                        out.mux(waiting)
                        waiting = next(audio, None)
                    packet.stream = video
                    out.mux(packet)
            while waiting is not None:
                waiting.stream = audio_map[waiting.stream.index]
                out.mux(waiting)
                waiting = next(audio, None)
    except BaseException:
        discard(tmp)
        raise
    finally:
        source.close()
        for c in opened:
            c.close()
    publish(tmp, dst)
    return len(audio_map)


def merge_summaries(parts: list[Summary], *, output: Path | None, seconds: float, audio_streams: int) -> Summary:
    """One file's summary from its segments' (counts added, per-frame lists concatenated)."""
    first = parts[0]
    merged = Summary(input=first.input, output=str(output) if output else None, method=first.method,
                     detector=first.detector, width=first.width, height=first.height, fps=first.fps)
    for s in parts:
        merged.frames += s.frames
        merged.faces_per_frame += s.faces_per_frame
        merged.kept_per_frame += s.kept_per_frame
        merged.tracks += s.tracks
        merged.frames_filled += s.frames_filled
        merged.faces_filled += s.faces_filled
        merged.frames_masked_on_error += s.frames_masked_on_error
        merged.recognizer_failures += s.recognizer_failures
        merged.metadata_dropped += s.metadata_dropped
        merged.frames_damaged += s.frames_damaged
        merged.damaged_ranges += s.damaged_ranges
        merged.decode_errors += s.decode_errors
        merged.frames_lost += s.frames_lost
        merged.scene_cuts += s.scene_cuts
        merged.frames_detected += s.frames_detected
        merged.frames_detected_whole += s.frames_detected_whole
        for stage, ms in s.stage_ms.items():  # ms per frame, weighted by the segment's frames
            merged.stage_ms[stage] = merged.stage_ms.get(stage, 0.0) + ms * s.frames
        for key, values in s.method_stats.items():
            merged.method_stats.setdefault(key, []).extend(values)
    merged.stage_ms = {k: round(v / max(merged.frames, 1), 2) for k, v in merged.stage_ms.items()}
    merged.audio_streams_copied = audio_streams
    merged.seconds = seconds
    merged.fps_processed = merged.frames / seconds if seconds else 0.0
    return merged
