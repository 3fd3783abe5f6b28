"""One file, end to end: a video (`protect_video`), a photo (`protect_photo`, in one step: detect,
protect, write), either by its extension (`protect_file`), and `protect`, the Python API's call.

The output appears only when the whole file succeeded (a temporary file renamed into place).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from veil.detect import Detector
from veil.errors import DetectionError, InputError, ProtectionError
from veil.export import Exports
from veil.export.review import Review, check_video, load_review
from veil.faces import FACE, PERSON, PLATE, Faces
from veil.media.photo import check_photo_output, is_photo, read_photo, write_photo
from veil.media.read import VideoReader
from veil.media.write import EncodeOptions, VideoWriter, check_output_path
from veil.pipeline.frames import protect_frames
from veil.pipeline.options import ProtectOptions, Summary
from veil.protect import Protector, ProtectState, mask_everything

__all__ = ["protect_video", "protect_photo", "protect_file", "protect"]


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
        exports = _exports(src, options, protector)
        writer = None if options.dry_run else VideoWriter(
            dst, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
            source=src, options=options.encode, colour=info.colour)
        review = reviewed(src, options)
        try:
            protect_frames(reader, detector, protector, writer, options, summary, progress, exports=exports,
                           review=review)
        except BaseException:
            if writer is not None:
                writer.abort()
            if exports is not None:
                exports.abort()
            raise
        if writer is not None:
            writer.close()
            summary.audio_streams_copied = info.audio_streams if options.encode.keep_audio else 0
            summary.metadata_dropped = reader.metadata_dropped(keep_metadata=options.encode.keep_metadata,
                                                               keep_audio=options.encode.keep_audio)
        if exports is not None:
            exports.finish(video=export_header(src, info.width, info.height, str(info.fps)),
                           detector=detector.name, targets=list(options.targets))
    finally:
        reader.close()
    summary.seconds = time.perf_counter() - start
    summary.fps_processed = summary.frames / summary.seconds if summary.seconds else 0.0
    return summary


def _exports(src: Path, options: ProtectOptions, protector: Protector) -> Exports | None:
    tracks, masks = options.export_paths(src)
    return None if tracks is None and masks is None else Exports(tracks, masks, str(src), protector)


def reviewed(src: Path, options: ProtectOptions) -> Review | None:
    """The review sidecar of `options`, checked against the video (None without ``--review``)."""
    if options.review is None:
        return None
    review = load_review(options.review)
    check_video(review, src, Path(options.review))
    return review


def live_exports(name: str, options: ProtectOptions, protector: Protector) -> Exports | None:
    """The exports of a live source: named after a growing file (--follow), else "stream"."""
    stem = Path(name).stem if "://" not in name and Path(name).is_file() else "stream"
    return _exports(Path(f"{stem}.live"), options, protector)


def export_header(src: Path, width: int, height: int, fps: str) -> dict[str, Any]:
    """The ``video`` entry of a track export."""
    return {"path": str(src), "width": width, "height": height, "fps": fps}


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
    does: a photo whose detection or protection raised is written fully masked (or the call raises
    `DetectionError` / `ProtectionError` with ``on_detection_error="stop"``).
    """
    src = Path(src)
    if options.review is not None:
        raise InputError(f"--review is for videos; {str(src)!r} is a photo")
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
    faces = Faces(faces.boxes, faces.landmarks, faces.scores, np.arange(len(faces)), kinds=faces.kinds)
    state = ProtectState(seed=options.seed)
    known = options.build_known()
    exports = _exports(src, options, protector)
    keep = None
    if known is not None and not failed:  # people and plates are never kept
        own = faces.kinds == FACE
        found = known.recognised(photo.rgb, faces[own])
        summary.recognizer_failures = int(found is None)
        keep = np.zeros(len(faces), bool)
        keep[own] = False if found is None else found
        summary.kept_per_frame = [int(keep.sum())]
    if exports is not None:
        exports.frame(0, 0.0, faces, keep, "detection failed" if failed else None)
    hidden = faces if keep is None else faces[~keep]  # all but those --keep-face leaves
    outline = getattr(detector, "outline", None)
    if outline is not None and len(hidden) and not failed:
        try:
            hidden = outline(photo.rgb, hidden)
        except Exception:  # noqa: BLE001 - the person's whole box is masked instead
            summary.silhouette_failures += 1
    if failed:
        image = mask_everything(photo.rgb)
    elif options.dry_run or len(hidden) == 0:
        image = photo.rgb
    else:
        try:
            image = protector(photo.rgb, hidden, state)
        except Exception as exc:  # noqa: BLE001 - a protection that fails must fail closed
            if options.on_detection_error == "stop":
                raise ProtectionError(f"protection failed on {str(src)!r}: {exc}") from exc
            image, failed = mask_everything(photo.rgb), True
            if exports is not None:
                exports.protection_failed(0)
    try:
        if exports is not None:
            exports.mask(0, photo.rgb.shape, hidden, failed)
        if not options.dry_run:
            write_photo(dst, photo, image, keep_metadata=options.encode.keep_metadata)
            summary.metadata_dropped = photo.metadata_dropped(options.encode.keep_metadata)
        if exports is not None:
            exports.finish(video=export_header(src, photo.width, photo.height, ""), detector=detector.name,
                           targets=list(options.targets))
    except BaseException:
        if exports is not None:
            exports.abort()
        raise
    summary.frames = summary.frames_detected = 1
    summary.faces_per_frame = [int((faces.kinds == FACE).sum())]
    if getattr(detector, "kinds", (FACE,)) != (FACE,):
        summary.people_per_frame = [int((faces.kinds == PERSON).sum())]
        summary.plates_per_frame = [int((faces.kinds == PLATE).sum())]
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
