"""What decides how a file is protected (`ProtectOptions`) and what happened to it (`Summary`, the
``--json`` summary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from veil.detect import DETECT_SIZE, Detector, TrackerConfig, get_detector
from veil.detect.people import PEOPLE_THRESHOLD
from veil.device import parse_device, use_device
from veil.errors import InputError
from veil.keep import KEEP_DISTANCE, MAX_KEEP_DISTANCE, KnownFaces, known_faces
from veil.media.damage import ON_DAMAGE
from veil.media.sources import MAX_PIXELS
from veil.media.write import EncodeOptions
from veil.models.centerface import PRECISIONS
from veil.protect import Protector, get_protector
from veil.protect.base import FACES_ONLY, whole_target_methods

__all__ = ["ProtectOptions", "LiveOptions", "Summary", "TARGETS"]

TARGETS = ("faces", "people", "plates")


@dataclass(frozen=True)
class LiveOptions:
    """How a live source is protected (see `veil.pipeline.live`).

    `max_delay_s`: a frame that waited longer than this since it arrived is late: it is sent
    fully masked (`when_late` "mask") or dropped ("drop"), so the delay never grows without bound
    and no frame goes out unprotected. `reconnect`: attempts to reopen a source that stalls or
    drops (with backoff), 0: the stream ends there.
    """

    when_late: str = "mask"
    max_delay_s: float = 0.5
    reconnect: int = 0
    stall_s: float = 10.0  # a network source silent this long has stalled (reconnect, or the stream ends)

    def __post_init__(self) -> None:
        if self.when_late not in ("mask", "drop"):
            raise InputError(f"--when-late must be mask or drop, not {self.when_late!r}")
        if not self.max_delay_s > 0 or self.reconnect < 0 or not self.stall_s > 0:
            raise InputError("--max-delay and --stall-timeout must be positive and --reconnect at least 0")


@dataclass
class ProtectOptions:
    """Everything that decides how one video is protected."""

    method: str = "blur"
    method_options: dict[str, Any] = field(default_factory=dict)
    # What is found and protected (``--targets``): any of TARGETS; the face detector is `detector`.
    targets: tuple[str, ...] = ("faces",)
    people_threshold: float = PEOPLE_THRESHOLD  # CenterNet's person score that counts
    detector: str = "centerface"
    threshold: float | None = None
    detect_size: int | None = DETECT_SIZE
    # Photos have their own size, so that a run that lowers `detect_size` for speed still finds
    # the small faces of a group photo (one detection each: a large size costs little).
    photo_detect_size: int | None = DETECT_SIZE
    detect_every: int = 2  # run the detector on every N-th frame; the tracker covers the others
    # Between whole looks (every lookahead + 1 frames), look only around the tracked faces
    # (`veil.pipeline.frames`); False: every look is whole.
    track_regions: bool = True
    detector_precision: str = "int8"  # CenterFace's: "int8" or "fp32" (`veil.models.centerface`)
    device: str = "cpu"  # where the ONNX Runtime networks run: auto, cpu, cuda[:N] (`veil.device`)
    # A detection or a protection that raises: "mask" writes the frame fully masked; "stop" fails the video.
    on_detection_error: str = "mask"
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
    # Exports beside the output (`veil.export`): a .json/.csv file (or a folder that gets one
    # <input stem>.tracks.json each) and a folder of per-frame mask PNGs (<folder>/<input stem>/).
    export_tracks: str | None = None
    export_masks: str | None = None
    # A review sidecar (`veil review`): its boxes are protected as they are, nothing is detected.
    review: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = tuple(t.strip() for t in self.targets.split(",") if t.strip())
        self.targets = tuple(self.targets)
        if self.review is not None and self.keep_faces:
            raise InputError("--review already says which faces stay as they are: drop --keep-face")
        if not 0 < self.people_threshold < 1:
            raise InputError(f"--people-threshold must be between 0 and 1, got {self.people_threshold}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise InputError(f"--targets takes one or more of {', '.join(TARGETS)} (comma-separated, each once), "
                             f"got {','.join(self.targets) or 'nothing'}")
        self.keep_faces = tuple(str(Path(p).resolve()) for p in self.keep_faces)
        if not 0 < self.keep_distance <= MAX_KEEP_DISTANCE:
            raise InputError(f"--keep-distance must be above 0 and at most {MAX_KEEP_DISTANCE} (dlib's own "
                             f"same-person threshold: beyond it a stranger would be kept), got {self.keep_distance}")
        if self.on_detection_error not in ("mask", "stop"):
            raise InputError(f"on_detection_error must be 'mask' or 'stop', got {self.on_detection_error!r}")
        if self.detector_precision not in PRECISIONS:
            raise InputError(f"--detector-precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.detector_precision!r}")
        parse_device(self.device)
        if self.on_damage not in ON_DAMAGE:
            raise InputError(f"on_damage must be one of {', '.join(ON_DAMAGE)}, got {self.on_damage!r}")
        if not 1 <= self.detect_every <= self.tracker.lookahead + 1:
            raise InputError(f"detect_every must be between 1 and {self.tracker.lookahead + 1} "
                             f"(the tracker holds {self.tracker.lookahead} frames back)")

    def build_detector(self, threads: int = 0) -> Detector:
        """The detector of the targets (the face detector alone for faces); `threads` > 0 caps the
        CPU threads it runs on (a worker's share of the cores). The networks it opens run on
        `device` (chosen here, once per process)."""
        use_device(self.device)
        opts: dict[str, Any] = {"detect_size": self.detect_size}
        if self.threshold is not None:
            opts["threshold"] = self.threshold
        if self.detector == "centerface":
            opts["precision"] = self.detector_precision
        if threads > 0:
            opts["threads"] = threads
        if self.targets == ("faces",):
            return get_detector(self.detector, **opts)
        from veil.detect.targets import TargetDetector

        faces = get_detector(self.detector, **opts) if "faces" in self.targets else None
        return TargetDetector(faces, people="people" in self.targets, plates="plates" in self.targets,
                              people_threshold=self.people_threshold)

    def build_protector(self) -> Protector:
        use_device(self.device)
        protector = get_protector(self.method, **self.method_options)
        if self.targets != ("faces",) and getattr(protector, FACES_ONLY, False):
            raise InputError(f"--method {self.method} protects faces only; for --targets "
                             f"{','.join(self.targets)} choose one of {', '.join(whole_target_methods())}")
        return protector

    def export_paths(self, src: str | Path) -> tuple[Path | None, Path | None]:
        """Where the exports of the input `src` go: (tracks file, masks folder), None where not asked."""
        stem = Path(src).stem
        tracks = None
        if self.export_tracks:
            tracks = Path(self.export_tracks)
            if tracks.suffix.lower() not in (".json", ".csv"):
                tracks = tracks / f"{stem}.tracks.json"
        masks = Path(self.export_masks) / stem if self.export_masks else None
        return tracks, masks

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
    frames_detected_whole: int = 0  # of those, looked at whole (the others around the tracked faces only)
    frames_filled: int = 0  # frames where the tracker drew at least one face not detected in that frame
    faces_filled: int = 0
    frames_masked_on_error: int = 0  # a detection or a protection failed on them (or they leaned on one)
    recognizer_failures: int = 0  # --keep-face: detected frames whose faces could not be recognised (protected)
    # Damaged input (veil.media.damage): frames out of damaged stretches (masked whole unless
    # on_damage is "protect"), their time ranges in seconds, packets that failed to decode, and
    # frames the container lists that never decoded (the output has only the decoded ones).
    frames_damaged: int = 0
    damaged_ranges: list[list[float]] = field(default_factory=list)
    decode_errors: int = 0
    frames_lost: int = 0
    # Live runs (veil.pipeline.live): delay from a frame's arrival to its encoded packet (p50, p95,
    # max, ms), late frames sent masked or dropped, reconnections, and whether Ctrl-C ended it.
    latency_ms: dict[str, float] = field(default_factory=dict)
    frames_masked_late: int = 0
    frames_dropped_late: int = 0
    reconnects: int = 0
    interrupted: bool = False
    stream_error: str = ""  # why a live source ended before its end (it stalled or dropped for good)
    kept_per_frame: list[int] = field(default_factory=list)  # faces left as they are (--keep-face only)
    # --targets people / plates: how many of each per frame (empty when they are not targets), and
    # frames where a person's silhouette could not be found (the person's whole box was masked).
    people_per_frame: list[int] = field(default_factory=list)
    plates_per_frame: list[int] = field(default_factory=list)
    silhouette_failures: int = 0
    scene_cuts: int = 0
    audio_streams_copied: int = 0
    # What of the source's metadata the output lacks: tags (place, device, dates), subtitle and
    # data streams (telemetry), chapters; for a photo XMP, IPTC, thumbnails, extra pictures.
    metadata_dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fps_processed: float = 0.0
    method_stats: dict[str, list] = field(default_factory=dict)
    # ms per frame in each stage of the frame loop (`veil.pipeline.profile`): decode, detect,
    # track, protect, encode; they run at once on four threads, so they add up to more than
    # the wall time.
    stage_ms: dict[str, float] = field(default_factory=dict)

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
