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
from veil.faces import Faces
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
            summary.metadata_dropped = reader.metadata_dropped(keep_metadata=options.encode.keep_metadata,
                                                               keep_audio=options.encode.keep_audio)
    finally:
        reader.close()
    summary.seconds = time.perf_counter() - start
    summary.fps_processed = summary.frames / summary.seconds if summary.seconds else 0.0
    return summary


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
        keep = known.recognised(photo.rgb, faces)
        summary.recognizer_failures = int(keep is None)
        keep = np.zeros(len(faces), bool) if keep is None else keep
        summary.kept_per_frame = [int(keep.sum())]
        hidden = faces[~keep]
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
    if not options.dry_run:
        write_photo(dst, photo, image, keep_metadata=options.encode.keep_metadata)
        summary.metadata_dropped = photo.metadata_dropped(options.encode.keep_metadata)
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
