"""The one place where I/O meets the core: decode -> detect -> track -> protect -> encode.

Photos take the same path in one step (`protect_photo`): detect, protect, write; `protect_file`
picks by the file's extension.

Frames are decoded on a background thread (PyAV releases the GIL), detected (every
``detect_every``-th frame and on scene cuts), held back a few frames by the tracker (so gaps are
filled before a frame is written), protected and encoded on another background thread. The output appears only when the whole video succeeded. Privacy fails closed: a
frame whose detection raised is written fully masked (or the run stops, by option); it is never
written unprotected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from veil.detect import DETECT_SIZE, Detector, Tracker, TrackerConfig, get_detector
from veil.detect.track import is_scene_cut, scene_thumbnail
from veil.errors import DetectionError, InputError
from veil.faces import Faces
from veil.keep import KEEP_DISTANCE, KeptTracks, KnownFaces, known_faces
from veil.media.background import Sink, prefetch
from veil.media.damage import ON_DAMAGE
from veil.media.photo import check_photo_output, is_photo, read_photo, write_photo
from veil.media.read import Frame, FrameSource, VideoReader
from veil.media.sources import MAX_PIXELS
from veil.media.write import EncodeOptions, VideoWriter, check_output_path
from veil.protect import Protector, ProtectState, get_protector, mask_everything

__all__ = ["ProtectOptions", "Summary", "FrameWriter", "HeldFrame", "protect_frames", "protect_video",
           "protect_photo", "protect_file", "protect"]


@dataclass
class ProtectOptions:
    """Everything that decides how one video is protected."""

    method: str = "blur"
    method_options: dict[str, Any] = field(default_factory=dict)
    detector: str = "centerface"
    threshold: float | None = None
    detect_size: int | None = DETECT_SIZE
    # Photos have their own size, so that a run that lowers `detect_size` for speed still finds
    # the small faces of a group photo (one detection each: a large size costs little).
    photo_detect_size: int | None = DETECT_SIZE
    detect_every: int = 2  # run the detector on every N-th frame; the tracker covers the others
    on_detection_error: str = "mask"  # "mask": write the frame fully masked; "stop": fail the video
    # Frames of a damaged stretch of the file (veil.media.damage): "mask" them whole, "protect" them
    # like any other frame, or "stop" at the first decoding error (strict decoding).
    on_damage: str = "mask"
    max_pixels: int | None = MAX_PIXELS  # larger pictures are refused before they are decoded (None: no limit)
    seed: int = 0
    dry_run: bool = False
    # Photos of the people whose faces stay visible (one face each; see veil.keep).
    keep_faces: tuple[str, ...] = ()
    keep_distance: float = KEEP_DISTANCE
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    encode: EncodeOptions = field(default_factory=EncodeOptions)

    def __post_init__(self) -> None:
        self.keep_faces = tuple(str(Path(p).resolve()) for p in self.keep_faces)
        if not 0 < self.keep_distance < 2:
            raise InputError(f"keep_distance must be between 0 and 2 (dlib's distances), "
                             f"got {self.keep_distance}")
        if self.on_detection_error not in ("mask", "stop"):
            raise InputError(f"on_detection_error must be 'mask' or 'stop', got {self.on_detection_error!r}")
        if self.on_damage not in ON_DAMAGE:
            raise InputError(f"on_damage must be one of {', '.join(ON_DAMAGE)}, got {self.on_damage!r}")
        if not 1 <= self.detect_every <= self.tracker.lookahead + 1:
            raise InputError(f"detect_every must be between 1 and {self.tracker.lookahead + 1} "
                             f"(the tracker holds {self.tracker.lookahead} frames back)")

    def build_detector(self, threads: int = 0) -> Detector:
        """The detector; `threads` > 0 caps the CPU threads it runs on (a worker's share of the cores)."""
        opts: dict[str, Any] = {"detect_size": self.detect_size}
        if self.threshold is not None:
            opts["threshold"] = self.threshold
        if threads > 0:
            opts["threads"] = threads
        return get_detector(self.detector, **opts)

    def build_protector(self) -> Protector:
        return get_protector(self.method, **self.method_options)

    def build_known(self) -> KnownFaces | None:
        """The people of `keep_faces` (None when there are none); raises `InputError` for a bad photo."""
        return known_faces(self.keep_faces, self.keep_distance)


@dataclass
class Summary:
    """What happened to one video or photo (the `--json` summary)."""

    input: str
    output: str | None
    method: str
    detector: str
    kind: str = "video"  # or "photo" (one frame)
    frames: int = 0
    width: int = 0
    height: int = 0
    fps: str = ""  # "" for a photo
    faces_per_frame: list[int] = field(default_factory=list)
    tracks: int = 0
    frames_detected: int = 0  # frames the detector ran on (all of them with detect_every 1)
    frames_filled: int = 0  # frames where the tracker drew at least one face not detected in that frame
    faces_filled: int = 0
    frames_masked_on_error: int = 0
    # Damaged input (veil.media.damage): frames out of damaged stretches (masked whole unless
    # on_damage is "protect"), their time ranges in seconds, packets that failed to decode, and
    # frames the container lists that never decoded (the output has only the decoded ones).
    frames_damaged: int = 0
    damaged_ranges: list[list[float]] = field(default_factory=list)
    decode_errors: int = 0
    frames_lost: int = 0
    kept_per_frame: list[int] = field(default_factory=list)  # faces left as they are (--keep-face only)
    scene_cuts: int = 0
    audio_streams_copied: int = 0
    seconds: float = 0.0
    fps_processed: float = 0.0
    method_stats: dict[str, list] = field(default_factory=dict)

    @property
    def faces(self) -> int:
        return int(sum(self.faces_per_frame))

    @property
    def faces_kept(self) -> int:
        return int(sum(self.kept_per_frame))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faces"] = self.faces
        d["faces_kept"] = self.faces_kept
        return d


def _prepare(src: Path, dst: str | Path | None, options: ProtectOptions, detector: Detector | None,
             protector: Protector | None, check_output: Callable[[Path, Path], None],
             ) -> tuple[Path | None, Detector, Protector]:
    """The output path, checked by `check_output` (None on a dry run), and the models (built unless given)."""
    if options.dry_run:
        dst = None
    else:
        if dst is None:
            raise InputError("an output path is needed (or use a dry run)")
        dst = Path(dst)
        check_output(src, dst)
    return dst, detector or options.build_detector(), protector or options.build_protector()


def protect_video(src: str | Path, dst: str | Path | None, options: ProtectOptions = ProtectOptions(), *,
                  detector: Detector | None = None, protector: Protector | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Summary:
    """Protect every face in every frame of `src` and write `dst` (nothing written on a dry run).

    `progress(frames_done, frames_total)` is called after each frame (total 0 when unknown).
    Raises `InputError` for bad input/output and `DetectionError` when detection fails with
    ``on_detection_error="stop"``; in every failure no file appears at `dst`.
    """
    src = Path(src)
    start = time.perf_counter()
    reader = VideoReader(src, tolerate_damage=options.on_damage != "stop", max_pixels=options.max_pixels)
    try:
        info = reader.info
        dst, detector, protector = _prepare(src, dst, options, detector, protector, check_output_path)
        summary = Summary(input=str(src), output=None if dst is None else str(dst), method=options.method,
                          detector=detector.name, width=info.width, height=info.height, fps=str(info.fps))
        writer = None if options.dry_run else VideoWriter(
            dst, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
            source=src, options=options.encode, colour=info.colour)
        try:
            protect_frames(reader, detector, protector, writer, options, summary, progress)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
            summary.audio_streams_copied = info.audio_streams if options.encode.keep_audio else 0
    finally:
        reader.close()
    summary.seconds = time.perf_counter() - start
    summary.fps_processed = summary.frames / summary.seconds if summary.seconds else 0.0
    return summary


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


def _detect_at(detector: Detector, image: np.ndarray, detect_size: int | None) -> Faces:
    """One detection at `detect_size` (the detectors that scale frames say so in `detect_size`)."""
    if not hasattr(detector, "detect_size"):
        return detector.detect(image)
    before = detector.detect_size
    detector.detect_size = detect_size
    try:
        return detector.detect(image)
    finally:
        detector.detect_size = before


def protect_photo(src: str | Path, dst: str | Path | None, options: ProtectOptions = ProtectOptions(), *,
                  detector: Detector | None = None, protector: Protector | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Summary:
    """Protect every face of the photo `src` and write `dst`, a photo (nothing written on a dry run).

    The detector sees the photo at `options.photo_detect_size`. Fails closed as `protect_video`
    does: a photo whose detection raised is written fully masked (or the call raises
    `DetectionError` with ``on_detection_error="stop"``).
    """
    src = Path(src)
    start = time.perf_counter()
    photo = read_photo(src, max_pixels=options.max_pixels)
    dst, detector, protector = _prepare(src, dst, options, detector, protector, check_photo_output)
    summary = Summary(input=str(src), output=None if dst is None else str(dst), method=options.method,
                      detector=detector.name, kind="photo", width=photo.width, height=photo.height)
    failed = False
    try:
        faces = _detect_at(detector, photo.rgb, options.photo_detect_size).clipped(photo.width, photo.height)
    except Exception as exc:  # noqa: BLE001 - any detector failure must fail closed
        if options.on_detection_error == "stop":
            raise DetectionError(f"face detection failed on {str(src)!r}: {exc}") from exc
        faces, failed = Faces.empty(), True
    # Each face its own "track": the learned protections keep per-person state by track id.
    faces = Faces(faces.boxes, faces.landmarks, faces.scores, np.arange(len(faces)))
    state = ProtectState(seed=options.seed)
    known = options.build_known()
    hidden = faces  # the faces to protect: all but those --keep-face leaves
    if known is not None and not failed:
        keep = known.matches(photo.rgb, faces)
        summary.kept_per_frame = [int(keep.sum())]
        hidden = faces[~keep]
    if failed:
        image = mask_everything(photo.rgb)
    elif options.dry_run or len(hidden) == 0:
        image = photo.rgb
    else:
        image = protector(photo.rgb, hidden, state)
    if not options.dry_run:
        write_photo(dst, photo, image, keep_metadata=options.encode.keep_metadata)
    summary.frames = summary.frames_detected = 1
    summary.faces_per_frame = [len(faces)]
    summary.tracks = len(faces)
    summary.frames_masked_on_error = int(failed)
    summary.method_stats = {k: list(v) for k, v in state.stats.items()}
    summary.seconds = time.perf_counter() - start
    summary.fps_processed = 1 / summary.seconds if summary.seconds else 0.0
    if progress is not None:
        progress(1, 1)
    return summary


def protect_file(src: str | Path, dst: str | Path | None, options: ProtectOptions = ProtectOptions(), *,
                 detector: Detector | None = None, protector: Protector | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Summary:
    """`protect_photo` for a photo (by its extension), `protect_video` for anything else."""
    protect_one = protect_photo if is_photo(src) else protect_video
    return protect_one(src, dst, options, detector=detector, protector=protector, progress=progress)


def protect(src: str | Path, dst: str | Path | None = None, method: str = "blur", **options: Any) -> Summary:
    """Protect one video or photo: ``veil.protect("in.mp4", "out.mp4", method="mosaic", blocks=10)``.

    Keyword options are `ProtectOptions` fields (detector, threshold, detect_size, seed, dry_run,
    ...), `EncodeOptions` fields (codec, crf, preset, keep_audio, keep_metadata) or options of the
    method (mask_scale, strength, blocks, ...). `dst` defaults to ``<name>_protected<ext>``.
    """
    src = Path(src)
    if dst is None and not options.get("dry_run"):
        dst = src.with_name(f"{src.stem}_protected{src.suffix}")
    encode_fields = set(EncodeOptions.__dataclass_fields__)
    pipeline_fields = set(ProtectOptions.__dataclass_fields__) - {"method", "method_options", "encode"}
    encode = EncodeOptions(**{k: v for k, v in options.items() if k in encode_fields})
    pipeline = {k: v for k, v in options.items() if k in pipeline_fields}
    method_options = {k: v for k, v in options.items() if k not in encode_fields | pipeline_fields}
    return protect_file(src, dst, ProtectOptions(method=method, method_options=method_options,
                                                 encode=encode, **pipeline))
