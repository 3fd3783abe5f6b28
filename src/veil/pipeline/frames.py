"""The frame loop of one video: decoded ahead, detected and tracked, protected and encoded behind.

Frames are decoded on a background thread (PyAV releases the GIL), detected (every
``detect_every``-th frame and on scene cuts), held back a few frames by the tracker (so gaps are
filled before a frame is written), protected and encoded on another background thread. Privacy
fails closed: a frame whose detection raised, and a frame of a damaged stretch of the file, is
written fully masked (or the run stops, by option); it is never written unprotected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from veil.detect import Detector, Tracker
from veil.detect.track import is_scene_cut, scene_thumbnail
from veil.errors import DetectionError
from veil.faces import Faces
from veil.keep import KeptTracks
from veil.media.background import Sink, prefetch
from veil.media.read import Frame, FrameSource
from veil.pipeline.options import ProtectOptions, Summary
from veil.protect import Protector, ProtectState, mask_everything

__all__ = ["FrameWriter", "HeldFrame", "protect_frames"]


class FrameWriter(Protocol):
    """Where the frame loop writes: a `VideoWriter`, or anything that takes frames the same way."""

    def write(self, image: np.ndarray, pts: int | None = None) -> None: ...


@dataclass
class HeldFrame:
    """A frame the tracker holds back until its faces are final.

    `failed`: its detection failed, or it leans on one that did (a frame the detector skipped
    before a failed detection): it is written fully masked. `detected`: the detector ran on it.
    `masked`: it came out of a damaged stretch of the file and is written fully masked.
    """

    frame: Frame
    failed: bool
    detected: bool
    masked: bool = False


def protect_frames(source: FrameSource, detector: Detector, protector: Protector, writer: FrameWriter | None,
                   options: ProtectOptions, summary: Summary,
                   progress: Callable[[int, int], None] | None = None) -> None:
    """The frame loop of `protect_video` (also used per segment by `veil.batch.segments`): detect,
    track, protect and write every frame of `source` to `writer` (None: dry run), filling `summary`."""
    _FrameLoop(source, detector, protector, writer, options, summary, progress).run()


class _FrameLoop:
    """One video's frames: decoded ahead, detected and tracked here, protected and encoded behind.

    The tracker holds frames back (`held`) until their faces are final; `kept` (--keep-face) sees
    every detection, with its track, before the frames it decides are released.

    With ``detect_every`` N > 1 the detector runs on every N-th frame and on every scene cut; the
    frames between are covered by the tracker, which holds frames back until the next detection
    and interpolates between the two (and draws a new face back onto the frames before it).
    """

    def __init__(self, source: FrameSource, detector: Detector, protector: Protector, writer: FrameWriter | None,
                 options: ProtectOptions, summary: Summary, progress: Callable[[int, int], None] | None) -> None:
        self.source, self.detector, self.protector, self.writer = source, detector, protector, writer
        self.options, self.summary, self.progress = options, summary, progress
        self.tracker = Tracker(options.tracker)
        self.state = ProtectState(seed=options.seed)
        known = options.build_known()
        self.kept: KeptTracks | None = known.tracks() if known is not None else None
        self.held: deque[HeldFrame] = deque()
        self.previous_thumb: np.ndarray | None = None
        self.last_failed = False  # whether the latest detection failed (the frames it skipped inherit it)
        self.sink = Sink(self._finish)

    def run(self) -> None:
        try:
            for frame in prefetch(iter(self.source)):
                self._push(frame)
            self._emit(self.tracker.flush())
        except BaseException:
            self.sink.abandon()
            raise
        self.sink.close()
        self.summary.tracks = self.tracker.tracks_started
        self.summary.faces_filled = self.tracker.faces_filled
        damage = self.source.damage
        self.summary.frames_damaged = damage.frames
        self.summary.damaged_ranges = [[round(a, 3), round(b, 3)] for a, b in damage.ranges]
        self.summary.decode_errors, self.summary.frames_lost = damage.errors, damage.lost
        self.summary.method_stats = {k: list(v) for k, v in self.state.stats.items()}

    def _push(self, frame: Frame) -> None:
        """Detect (when due) and track one decoded frame; hand on the frames that are final."""
        masked = frame.damaged and self.options.on_damage == "mask"
        cut = False
        if not masked:  # a garbled frame is neither looked at for faces nor compared for a cut
            thumb = scene_thumbnail(frame.image)
            cut = is_scene_cut(self.previous_thumb, thumb)
            self.previous_thumb = thumb
        detected = not masked and (cut or frame.index % self.options.detect_every == 0)
        faces, failed = Faces.empty(), False
        if detected:
            try:
                faces = self.detector.detect(frame.image)
            except Exception as exc:  # noqa: BLE001 - any detector failure must fail closed
                if self.options.on_detection_error == "stop":
                    raise DetectionError(f"face detection failed on frame {frame.index}: {exc}") from exc
                failed = True
            self.summary.frames_detected += 1
            if failed:
                # The skipped frames before a failed detection leaned on it: they fail closed too.
                for held in reversed(self.held):
                    if held.detected:
                        break
                    held.failed = True
            self.last_failed = failed
        self.summary.scene_cuts += int(cut)
        self.held.append(HeldFrame(frame, self.last_failed, detected, masked))
        info = self.source.info
        faces = faces.clipped(info.width, info.height)
        ready = self.tracker.push(faces, scene_cut=cut)
        if self.kept is not None and detected and not failed:
            self.kept.observe(frame.index, frame.image, faces, self.tracker.assigned)
        self._emit(ready)
        if self.progress is not None:
            self.progress(frame.index + 1, info.frame_count)

    def _emit(self, ready: list[Faces]) -> None:
        """The tracker's final faces for the oldest held frames: count them, send them to be written."""
        summary = self.summary
        for faces in ready:
            held = self.held.popleft()
            summary.faces_per_frame.append(len(faces))
            summary.frames_filled += int(faces.filled.any())
            summary.frames_masked_on_error += int(held.failed)
            summary.frames += 1
            if self.kept is not None:
                keep = self.kept.left_as_is(held.frame.index, faces)
                summary.kept_per_frame.append(int(keep.sum()))
                faces = faces[~keep]
            self.sink.put(held, faces)

    def _finish(self, held: HeldFrame, faces: Faces) -> None:
        """Protect and encode one frame (on the sink's thread, in frame order)."""
        frame = held.frame
        if held.failed or held.masked:
            image = mask_everything(frame.image)
        elif self.writer is None or len(faces) == 0:
            image = frame.image
        else:
            self.state.frame_index = frame.index
            image = self.protector(frame.image, faces, self.state)
        if self.writer is not None:
            self.writer.write(image, frame.pts)
