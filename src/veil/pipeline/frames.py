"""The frame loop of one video: decoded ahead, detected and tracked, protected and encoded behind.

Frames are decoded on a background thread (PyAV releases the GIL), detected (every
``detect_every``-th frame and on scene cuts), held back a few frames by the tracker (so gaps are
filled before a frame is written), then protected on one background thread and encoded on another.

A detection looks at the whole frame at least every ``lookahead + 1`` frames (and on every cut);
between, a detector that can (`CenterFace.detect_regions`) looks only around the faces the tracker
follows, a fraction of the cost. A face that comes into view is then found by the next whole look,
at most ``lookahead`` frames later, and looked for again in the frames the tracker still holds,
walking back around where it was a frame later for as long as it is found there (the tracker
draws it back onto the others): the frames it appeared in are covered as they would be with every
look whole (``track_regions`` False). The time each stage takes is measured
(`veil.pipeline.profile`: the summary's ``stage_ms``).

Privacy fails closed: a frame whose detection raised, and a frame of a damaged stretch of the
file, is written fully masked (or the run stops, by option); it is never written unprotected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from veil.detect import Detector, Tracker
from veil.detect.motion import CameraMotion
from veil.detect.track import iou_matrix, is_scene_cut, scene_thumbnail
from veil.errors import DetectionError, ProtectionError
from veil.export import Exports
from veil.export.review import Review
from veil.faces import FACE, PERSON, PLATE, Faces
from veil.keep import KeptTracks
from veil.media.audio import AudioPacket
from veil.media.background import Sink, prefetch, queue_depth
from veil.media.read import Frame, FrameSource
from veil.pipeline.options import LiveOptions, ProtectOptions, Summary
from veil.pipeline.profile import Latency, StageClock
from veil.protect import Protector, ProtectState, mask_everything

__all__ = ["FrameWriter", "HeldFrame", "protect_frames"]

_Glance = tuple[np.ndarray | None, tuple[float, float]]  # (scene thumbnail, camera motion) of a frame


class FrameWriter(Protocol):
    """Where the frame loop writes: a `VideoWriter`, or anything that takes frames the same way
    (and, for a live source's sound, `write_audio`)."""

    def write(self, image: np.ndarray, pts: int | None = None) -> None: ...


@dataclass
class HeldFrame:
    """A frame the tracker holds back until its faces are final.

    `failed`: its detection failed, or it leans on one that did (a frame the detector skipped
    before a failed detection): it is written fully masked. `detected`: the detector ran on it.
    `masked`: it came out of a damaged stretch of the file, or it is a late live frame (`late`),
    and is written fully masked.
    """

    frame: Frame
    failed: bool
    detected: bool
    masked: bool = False
    late: bool = False
    due: float = 0.0  # live: when it was due (time.monotonic() s), which its latency counts from


def protect_frames(source: FrameSource, detector: Detector, protector: Protector, writer: FrameWriter | None,
                   options: ProtectOptions, summary: Summary,
                   progress: Callable[[int, int], None] | None = None, *, live: LiveOptions | None = None,
                   preview: Callable[[np.ndarray], None] | None = None,
                   status: Callable[[Summary], None] | None = None, exports: Exports | None = None,
                   review: Review | None = None) -> None:
    """The frame loop of `protect_video` (also used per segment by `veil.batch.segments`, and live by
    `veil.pipeline.live`): detect, track, protect and write every frame of `source` to `writer`
    (None: dry run), filling `summary`. `live`: the source is live (it hands out its audio packets
    too, from its own thread); late frames are masked or dropped and the latency is measured.
    `preview`: also called with every protected frame (a local viewer). `status` (live): called
    about once a second with `summary` so far, its ``latency_ms`` that of the last 10 s. `exports`:
    given every frame's boxes and masks (``--export-tracks``, ``--export-masks``). `review`: the boxes
    of a review sidecar are protected as they are (``--review``): nothing is detected or tracked."""
    _FrameLoop(source, detector, protector, writer, options, summary, progress, live, preview, status,
               exports, review).run()


class _FrameLoop:
    """One video's frames: decoded ahead, detected and tracked here, protected and encoded behind.

    The tracker holds frames back (`held`) until their faces are final; `kept` (--keep-face) sees
    every detection, with its track, before the frames it decides are released.

    With ``detect_every`` N > 1 the detector runs on every N-th frame and on every scene cut; the
    frames between are covered by the tracker, which holds frames back until the next detection
    and interpolates between the two (and draws a new face back onto the frames before it).
    """

    def __init__(self, source: FrameSource, detector: Detector, protector: Protector, writer: FrameWriter | None,
                 options: ProtectOptions, summary: Summary, progress: Callable[[int, int], None] | None,
                 live: LiveOptions | None = None, preview: Callable[[np.ndarray], None] | None = None,
                 status: Callable[[Summary], None] | None = None, exports: Exports | None = None,
                 review: Review | None = None) -> None:
        self.source, self.detector, self.protector, self.writer = source, detector, protector, writer
        self.options, self.summary, self.progress = options, summary, progress
        self.live, self.preview, self.latency = live, preview, Latency()
        self.status, self.status_at = status, 0.0
        self.exports, self.review = exports, review
        # A detector of people also outlines them (their silhouettes), frame by frame on the encoder's
        # thread, at the boxes the tracker settled on.
        self.outline = getattr(detector, "outline", None)
        self.counts_kinds = getattr(detector, "kinds", (FACE,)) != (FACE,)
        self.anchor: tuple[float, float] | None = None  # (arrival, stream time) of a live run's first frame
        self.tracker = Tracker(options.tracker)
        # Looks around the tracked faces between whole looks (None: every look is whole).
        self.look_around = getattr(detector, "detect_regions", None) if options.track_regions else None
        self.whole_every = options.tracker.lookahead + 1
        self.last_whole = -self.whole_every  # frame index of the latest whole look
        self.clock = StageClock()
        self.state = ProtectState(seed=options.seed)
        known = options.build_known()
        self.kept: KeptTracks | None = known.tracks() if known is not None else None
        self.held: deque[HeldFrame] = deque()
        self.previous_thumb: np.ndarray | None = None
        self.camera = CameraMotion()
        self.last_failed = False  # whether the latest detection failed (the frames it skipped inherit it)
        # The next frame shown is detected whatever the cadence: the frames before it were masked
        # or dropped unseen, so the tracker has nothing recent to cover it with.
        self.detect_next = False
        self.protect_failures = 0  # frames masked whole because the protection raised (counted on the sink's thread)
        # Protection and encoding each on a thread of their own, so that x264 encodes one frame while
        # the next is protected. A file's queues are deep enough to ride out a whole look (a detection
        # of a 1080p frame takes as long as encoding ten of them); a live source's stay short, as
        # every frame queued is delay.
        self.depth = 4 if live is not None else queue_depth(source.info.width, source.info.height)
        self.encoder = Sink(self._encode, depth=self.depth)
        self.sink = Sink(self._consume, depth=self.depth)

    def run(self) -> None:
        try:
            if self.live is None:
                for frame, glance in prefetch(self._glanced(self.clock.timed(self.source)), depth=self.depth):
                    self._push(frame, glance)
            else:
                self._run_live()
            self._emit(self.tracker.flush())
            self.sink.close()
        except BaseException:
            self.sink.abandon()
            self.encoder.abandon()
            raise
        self.encoder.close()
        self.summary.frames_masked_on_error += self.protect_failures
        if self.kept is not None:
            self.summary.recognizer_failures = self.kept.failures
        self.summary.latency_ms = self.latency.summary()
        self.summary.tracks = self.tracker.tracks_started
        self.summary.faces_filled = self.tracker.faces_filled
        damage = self.source.damage
        self.summary.frames_damaged = damage.frames
        self.summary.damaged_ranges = [[round(a, 3), round(b, 3)] for a, b in damage.ranges]
        self.summary.decode_errors, self.summary.frames_lost = damage.errors, damage.lost
        self.summary.method_stats = {k: list(v) for k, v in self.state.stats.items()}
        self.summary.stage_ms = self.clock.per_frame_ms(self.summary.frames)

    def _run_live(self) -> None:
        """A live source's frames and sound as they come; Ctrl-C ends the stream cleanly (the
        frames held back are still protected and written, and the sink is finalised)."""
        try:
            for item in self.clock.timed(self.source.demux()):
                if isinstance(item, AudioPacket):
                    self.sink.put("audio", item)
                else:
                    self._push(item)
        except KeyboardInterrupt:
            self.summary.interrupted = True

    def _due(self, frame: Frame) -> float:
        """When a live frame was due (`time.monotonic()` s), by the stream's own clock anchored at the
        first frame's arrival, and never later than it came. A frame that waited in the network or
        the decoder (which its arrival time cannot see) is then as late as one that waited here. The
        clock is anchored again where the stream's timestamps jump (more than 5 s back, 1 s ahead)."""
        t = frame.time_s
        if t != t:  # no timestamp
            return frame.arrival
        if self.anchor is None or not -5.0 < self.anchor[0] + t - self.anchor[1] - frame.arrival < 1.0:
            self.anchor = (frame.arrival, t)
        return min(self.anchor[0] + t - self.anchor[1], frame.arrival)

    def _glanced(self, frames: Iterable[Frame]) -> Iterator[tuple[Frame, _Glance | None]]:
        """A file's frames, each with its `_glance`, taken on the decoding thread: it has time to
        spare, and the detecting thread, which has none, is spared a millisecond a frame."""
        for frame in frames:
            yield frame, (None if self.review is not None else
                          self._glance(frame, frame.damaged and self.options.on_damage == "mask"))

    def _glance(self, frame: Frame, masked: bool) -> _Glance:
        """The frame's scene thumbnail and the camera's motion since the previous frame; a masked
        frame is neither compared for a cut nor for motion (None, no motion)."""
        if masked:
            self.camera.reset()
            return None, (0.0, 0.0)
        with self.clock.stage("track"):
            return scene_thumbnail(frame.image), self.camera.update(frame.image)

    def _push(self, frame: Frame, glance: _Glance | None = None) -> None:
        """Detect (when due) and track one decoded frame; hand on the frames that are final.
        `glance`: the frame's `_glance`, where it was taken ahead (a file's frames)."""
        masked = frame.damaged and self.options.on_damage == "mask"
        late = False
        due = self._due(frame) if self.live is not None else frame.arrival
        if self.live is not None and time.monotonic() - due > self.live.max_delay_s:
            if self.live.when_late == "drop":  # nothing of it is sent; the frames after it catch up
                self.summary.frames_dropped_late += 1
                # The frames held back for the tracker go now: no later frame may come in time to
                # release them (a stream that stays behind drops every one).
                self._emit(self.tracker.flush())
                self.detect_next = True
                return
            masked = late = True  # sent at once, whole frame masked: no detector time spent on it
            self.summary.frames_masked_late += 1
        if self.review is not None:
            self._push_reviewed(frame, masked, late, due)
            return
        if glance is None:
            glance = self._glance(frame, masked)
        thumb, camera = glance
        cut = False
        if thumb is not None:  # a garbled frame is neither looked at for faces nor compared for a cut
            cut = is_scene_cut(self.previous_thumb, thumb)
            self.previous_thumb = thumb
        whole = cut or self.detect_next
        detected = not masked and (whole or frame.index % self.options.detect_every == 0)
        self.detect_next = masked
        faces, failed = Faces.empty(), False
        if detected:
            try:
                with self.clock.stage("detect"):
                    faces = self._detect(frame, whole)
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
        self.held.append(HeldFrame(frame, self.last_failed, detected, masked, late, due))
        info = self.source.info
        faces = faces.clipped(info.width, info.height)
        with self.clock.stage("track"):
            ready = self.tracker.push(faces, scene_cut=cut, camera=camera)
            if self.kept is not None and detected and not failed:  # people and plates are never kept
                own = faces.kinds == FACE
                self.kept.observe(frame.index, frame.image, faces[own], self.tracker.assigned[own])
        self._emit(ready)
        if self.tracker.started and self.look_around is not None and self.last_whole == frame.index:
            with self.clock.stage("detect"):
                self._look_back(faces)
        if self.progress is not None:
            self.progress(frame.index + 1, info.frame_count)

    def _detect(self, frame: Frame, whole: bool) -> Faces:
        """The faces of one frame: a whole look when one is due (see the module docstring), else a
        look around the tracked faces only (none tracked: nothing to look at until the next whole
        look, which draws any new face back)."""
        if whole or self.look_around is None or frame.index - self.last_whole >= self.whole_every:
            self.last_whole = frame.index
            self.summary.frames_detected_whole += 1
            return self.detector.detect(frame.image)
        regions, sizes = self.tracker.search_regions()
        return self.look_around(frame.image, regions, sizes) if len(regions) else Faces.empty()

    def _look_back(self, faces: Faces) -> None:
        """Find the faces of the tracks the latest whole look started on the frames held before it,
        each around where it was a frame later; stop at the first frame it is not found on (or
        that was masked). Runs after `_emit`, so `held` is the tracker's frames, the latest last."""
        for d in range(len(faces)):
            track_id = int(self.tracker.assigned[d])
            if faces.kinds[d] != FACE or track_id not in self.tracker.started:
                continue
            box, points = faces.boxes[d], faces.landmarks[d]
            for back in range(1, self.tracker.held_back() + 1):
                held = self.held[-1 - back]
                if held.failed or held.masked:
                    break
                size = float(max(box[2] - box[0], box[3] - box[1], 1.0))
                region = (box + np.array([-size, -size, size, size], np.float32))[None]
                try:
                    found = self.look_around(held.frame.image, region, np.array([size], np.float32))
                except Exception:  # noqa: BLE001 - the frame keeps the box the tracker drew back
                    break
                if not len(found):
                    break
                best = int(np.argmax(iou_matrix(box[None], found.boxes)[0]))
                if iou_matrix(box[None], found.boxes[best:best + 1])[0, 0] <= 0:
                    break
                box, points = found.boxes[best], found.landmarks[best]
                self.tracker.place(track_id, back, box, points, float(found.scores[best]))

    def _push_reviewed(self, frame: Frame, masked: bool, late: bool, due: float) -> None:
        """A frame of a reviewed video: its boxes are the sidecar's, final as they are. A frame the
        review does not cover (the file decodes to more frames than it did) is masked whole."""
        unknown = frame.index >= self.review.frame_count
        faces = Faces.empty() if masked or unknown else self.review.at(frame.index)
        self.held.append(HeldFrame(frame, unknown, False, masked, late, due))
        self._emit([faces])
        if self.progress is not None:
            self.progress(frame.index + 1, self.source.info.frame_count)

    def _emit(self, ready: list[Faces]) -> None:
        """The tracker's final faces for the oldest held frames: count them, send them to be written."""
        summary = self.summary
        for faces in ready:
            held = self.held.popleft()
            summary.faces_per_frame.append(int((faces.kinds == FACE).sum()))
            if self.counts_kinds:
                summary.people_per_frame.append(int((faces.kinds == PERSON).sum()))
                summary.plates_per_frame.append(int((faces.kinds == PLATE).sum()))
            summary.frames_filled += int(faces.filled.any())
            summary.frames_masked_on_error += int(held.failed)
            summary.frames += 1
            keep = None
            if self.kept is not None:
                keep = self.kept.left_as_is(held.frame.index, faces)
                summary.kept_per_frame.append(int(keep.sum()))
            if self.exports is not None:
                whole = ("detection failed" if held.failed else "late" if held.late else
                         "damaged" if held.masked else None)
                self.exports.frame(held.frame.index, held.frame.time_s, faces, keep, whole)
            if keep is not None:
                faces = faces[~keep]
            self.sink.put("frame", held, faces)

    def _outlined(self, image: np.ndarray, faces: Faces) -> Faces:
        """`faces` with its people's silhouettes; a person the segmentation fails on keeps its box
        (masked whole), so a failure here costs looks, never privacy."""
        try:
            return self.outline(image, faces)
        except Exception:  # noqa: BLE001 - the box stays the mask
            self.summary.silhouette_failures += 1
            return faces

    def _consume(self, kind: str, *item: object) -> None:
        """The protect thread's work, in order: frames to protect, then handed to the encode thread
        with the audio to forward."""
        if kind == "frame":
            item = self._protect(*item)
        self.encoder.put(kind, *item)

    def _protect(self, held: HeldFrame, faces: Faces) -> tuple[HeldFrame, np.ndarray]:
        """Protect one frame (on the protect thread, in frame order): (the frame, its protected image)."""
        frame = held.frame
        drawn = self.writer is not None or self.preview is not None  # False: a dry run
        with self.clock.stage("protect"):
            image, faces, whole = self._protected(held, faces, drawn)
        if self.exports is not None:
            self.exports.mask(frame.index, frame.image.shape, faces, whole)
        return held, image

    def _encode(self, kind: str, *item: object) -> None:
        """The encode thread's work, in order: protected frames to write, audio to forward."""
        if kind == "audio":
            if self.writer is not None:
                self.writer.write_audio(item[0])
            return
        self._write(*item)

    def _write(self, held: HeldFrame, image: np.ndarray) -> None:
        """Encode one protected frame (on the encode thread, in frame order)."""
        frame = held.frame
        if self.writer is not None:
            with self.clock.stage("encode"):
                self.writer.write(image, frame.pts)
        if self.preview is not None:
            self.preview(image)
        if self.live is not None:
            now = time.monotonic()
            self.latency.add(now - held.due)
            if self.status is not None and now - self.status_at >= 1.0:
                self.status_at = now
                self.summary.latency_ms = self.latency.summary(last=10 * max(round(float(self.source.info.fps)), 1))
                self.status(self.summary)

    def _protected(self, held: HeldFrame, faces: Faces, drawn: bool) -> tuple[np.ndarray, Faces, bool]:
        """One frame protected: (image, the faces with their outlines, whether it is masked whole)."""
        frame = held.frame
        whole = held.failed or held.masked
        if (drawn or self.exports is not None) and not whole and self.outline is not None and len(faces):
            faces = self._outlined(frame.image, faces)
        if whole:
            image = mask_everything(frame.image)
        elif len(faces) == 0 or not drawn:  # nothing to hide, or a dry run
            image = frame.image
        else:
            self.state.frame_index = frame.index
            try:
                image = self.protector(frame.image, faces, self.state)
            except Exception as exc:  # noqa: BLE001 - a protection that fails must fail closed
                if self.options.on_detection_error == "stop":
                    raise ProtectionError(f"protection failed on frame {frame.index}: {exc}") from exc
                image = mask_everything(frame.image)
                whole = True
                self.protect_failures += 1
                if self.exports is not None:
                    self.exports.protection_failed(frame.index)
        return image, faces, whole
