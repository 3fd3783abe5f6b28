"""``veil evaluate``: compare a protected video, photo or photo folder with its original, frame by frame.

Faces are found on the ORIGINAL (one detector, tracked across frames; tracks end at scene cuts,
found as `veil protect` finds them, and where a folder's photos change size); every face of every
frame is then judged on the PROTECTED frame:

- privacy (:mod:`veil.evaluate.privacy`): does each detector still find it, does each recognizer
  still match it to the original face, how far apart are the descriptors;
- utility (:mod:`veil.evaluate.utility`): SSIM and PSNR of the frame, also outside the face masks,
  whether the top expression is the same, how much the face flickers between frames.

:func:`evaluate` returns a plain dict (the JSON report, documented in the README and built in
:mod:`veil.evaluate.results`); frames stream through in batches, never all in memory.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path

import cv2
import numpy as np

from veil.detect import Tracker, get_detector
from veil.detect.track import is_scene_cut, scene_thumbnail
from veil.errors import InputError
from veil.evaluate.privacy import detect_around, get_expression_model, matches_after, reidentified
from veil.evaluate.results import SCHEMA_VERSION, summarize
from veil.evaluate.utility import face_mask, flicker_ratio, frame_quality, temporal_change
from veil.faces import Faces
from veil.media.files import describe_kinds, media_files
from veil.media.photo import is_photo, read_photo
from veil.models.identity import get_recognizer

__all__ = ["EvaluateConfig", "WorstFrames", "iter_frames", "count_frames", "evaluate"]


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``veil evaluate`` measures and with which models."""

    detector: str = "centerface"  # finds the faces on the original
    detectors: tuple[str, ...] = ("centerface",)  # asked to find them on the protected (add "mtcnn")
    recognizers: tuple[str, ...] = ("dlib", "faceres", "faceres-deep", "mobilefacenet")
    expressions: bool = True
    mask_scale: float = 1.3  # face mask = box grown by this factor (deface's default)
    iou_threshold: float = 0.3  # a protected detection "finds" an original face at this overlap
    batch_size: int = 16
    max_frames: int | None = None
    attack: str | None = None  # "knn" or "linear": also run the cloak attack protocol (attack.py)
    # Whose pipeline attacks: "veil" (the recognizers above, through veil's detector and crops)
    # and/or "dlib" (dlib's library end to end, in a process of its own).
    attack_pipelines: tuple[str, ...] = ("veil",)
    attack_clean: str | None = None  # other clean footage of the person to test on (else: later frames)


def _image_files(folder: Path) -> list[Path]:
    files = media_files(folder, videos=False)
    if not files:
        raise InputError(f"'{folder}' has no images ({describe_kinds(videos=False)})")
    return files


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Frames of a video, a photo, or the photos of a folder in name order, as (H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"'{path}' does not exist")
    if path.is_dir():
        for file in _image_files(path):
            yield read_photo(file).rgb  # upright, as `veil protect` writes it
        return
    if is_photo(path):
        yield read_photo(path).rgb
        return
    from veil.media.read import read_frames

    yield from read_frames(path)


def count_frames(path: str | Path) -> int | None:
    """Number of frames if cheaply known (folder size, container header), else None."""
    path = Path(path)
    if path.is_dir():
        return len(_image_files(path))
    if is_photo(path):
        return 1
    from veil.media.read import probe

    n = probe(path).frame_count
    return n or None


def _pairs(original: str | Path, protected: str | Path, limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for i, (a, b) in enumerate(zip_longest(iter_frames(original), iter_frames(protected))):
        if limit is not None and i >= limit:
            return
        if a is None or b is None:
            short = original if a is None else protected
            raise InputError(f"'{short}' ends after {i} frames but the other input goes on; "
                             "evaluate needs the same frames on both sides")
        if a.shape != b.shape:
            raise InputError(f"frame {i}: original is {a.shape[1]}x{a.shape[0]}, protected "
                             f"{b.shape[1]}x{b.shape[0]}; evaluate needs frames of the same size")
        yield a, b


class WorstFrames:
    """Keeps small side-by-side thumbnails of the frames with the worst privacy and utility.

    Privacy is worst where a face came closest to being re-identified (the smallest distance
    relative to the recognizer's threshold), utility where SSIM is lowest.
    """

    def __init__(self, keep: int = 3, width: int = 320) -> None:
        self.keep = keep
        self.width = width
        self.privacy: list[tuple[float, int, np.ndarray]] = []  # (risk, frame, thumbnail)
        self.utility: list[tuple[float, int, np.ndarray]] = []

    def _thumb(self, original: np.ndarray, protected: np.ndarray) -> np.ndarray:
        h, w = original.shape[:2]
        size = (self.width, max(1, round(h * self.width / w)))
        small = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (original, protected)]
        return np.concatenate([small[0], np.full((size[1], 4, 3), 255, np.uint8), small[1]], axis=1)

    def offer(self, index: int, original: np.ndarray, protected: np.ndarray, record: dict, thresholds: dict) -> None:
        risks = [1.0 - f["descriptor_distance"][n] / thresholds[n] for f in record["faces"]
                 for n in f["descriptor_distance"]]
        for board, score in ((self.privacy, max(risks) if risks else None), (self.utility, 1.0 - record["ssim"])):
            if score is None or (len(board) >= self.keep and score <= board[-1][0]):
                continue
            board.append((score, index, self._thumb(original, protected)))
            board.sort(key=lambda item: -item[0])
            del board[self.keep:]


class _Judge:
    """Turns batches of (original, protected, faces) into per-frame records."""

    def __init__(self, config: EvaluateConfig, worst: WorstFrames | None = None) -> None:
        self.config = config
        self.worst = worst
        self.detectors = {name: get_detector(name) for name in config.detectors}
        self.recognizers = [get_recognizer(name) for name in config.recognizers]
        self.expression = get_expression_model() if config.expressions else None
        self.previous: tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]] | None = None
        self.index = 0
        # (frame, track, original descriptor, protected descriptor) per recognizer, for the attack
        self.kept: dict[str, list[tuple[int, int, np.ndarray, np.ndarray]]] = {m.name: [] for m in self.recognizers}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-quality")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, batch: list[tuple[np.ndarray, np.ndarray, Faces]]) -> list[dict]:
        cfg = self.config
        origs = [b[0] for b in batch]
        prots = [b[1] for b in batch]
        faces = [b[2] for b in batch]
        lms = [f.landmarks for f in faces]
        boxes = [f.boxes for f in faces]
        # image quality (numpy and OpenCV, mostly on one core) runs beside the networks
        qualities = [self._pool.submit(frame_quality, o, p, face_mask(o.shape[:2], f.boxes, cfg.mask_scale))
                     for o, p, f in batch]
        found = {name: detect_around(det, prots, boxes) for name, det in self.detectors.items()}
        n = sum(len(lm) for lm in lms)
        identity = {}
        for model in self.recognizers:
            # originals and protected crops in one pass: fewer, larger batches
            both = model.describe(origs + prots, lms + lms, cfg.batch_size)
            identity[model.name] = reidentified(both[:n], both[n:], model.threshold)
            if cfg.attack:
                where = [(self.index + j, int(t)) for j, f in enumerate(faces) for t in f.track_ids]
                self.kept[model.name].extend((fi, t, o, p) for (fi, t), o, p in zip(where, both[:n], both[n:]))
        labels = None
        if self.expression is not None and n:
            from veil.models.expression import EXPRESSIONS

            top = self.expression.describe(origs + prots, lms + lms, cfg.batch_size).argmax(axis=1)
            labels = [(EXPRESSIONS[a], EXPRESSIONS[b]) for a, b in zip(top[:n], top[n:])]
        records = []
        k = 0  # running index of the face over the batch
        for j, (orig, prot, f) in enumerate(batch):
            quality = qualities[j].result()
            after = {name: [bool(matches_after(f.boxes[i:i + 1], found[name][j][i], cfg.iou_threshold)[0])
                            for i in range(len(f))] for name in found}
            prev = self.previous
            face_records = []
            for i in range(len(f)):
                tid = int(f.track_ids[i])
                rec: dict = {"track_id": tid, "box": [round(float(v), 1) for v in f.boxes[i]],
                             "detected_after": {name: after[name][i] for name in after},
                             "reidentified": {name: bool(identity[name][1][k]) for name in identity},
                             "descriptor_distance": {name: round(float(identity[name][0][k]), 4) for name in identity}}
                if self.expression is not None:
                    rec.update(expression_original=labels[k][0], expression_protected=labels[k][1],
                               expression_agrees=labels[k][0] == labels[k][1])
                change_o = change_p = flick = None
                if prev is not None and tid in prev[2]:
                    box = f.boxes[i]
                    change_o = temporal_change(prev[0], orig, box)
                    change_p = temporal_change(prev[1], prot, box)
                    flick = round(flicker_ratio(change_p, change_o), 4)
                rec.update(temporal_change_original=None if change_o is None else round(change_o, 4),
                           temporal_change_protected=None if change_p is None else round(change_p, 4),
                           flicker=flick)
                face_records.append(rec)
                k += 1
            records.append({"index": self.index, **{key: round(v, 5) for key, v in asdict(quality).items()},
                            "faces": face_records})
            if self.worst is not None:
                self.worst.offer(self.index, orig, prot, records[-1], {m.name: m.threshold for m in self.recognizers})
            self.previous = (orig, prot, {int(t): b for t, b in zip(f.track_ids, f.boxes)})
            self.index += 1
        return records


def evaluate(original: str | Path, protected: str | Path, config: EvaluateConfig = EvaluateConfig(),
             progress: Callable[[int], None] | None = None, worst: WorstFrames | None = None) -> dict:
    """The evaluation report of ``protected`` against ``original`` (see the module docstring).

    ``progress`` is called with the number of frames finished after each batch; ``worst``, when
    given, collects thumbnails for the HTML report.
    """
    start = time.perf_counter()
    detector = get_detector(config.detector)
    tracker = Tracker()
    judge = _Judge(config, worst)
    pending: deque[tuple[np.ndarray, np.ndarray]] = deque()
    ready: list[Faces] = []
    frames: list[dict] = []

    def drain(final: bool) -> None:
        while len(ready) >= config.batch_size or (final and ready):
            take = min(len(ready), config.batch_size)
            batch = [(*pending.popleft(), faces[~faces.filled]) for faces in ready[:take]]
            del ready[:take]
            frames.extend(judge(batch))
            if progress is not None:
                progress(len(frames))

    last_shape, last_thumb = None, None  # of the previous original frame

    def cut(frame: np.ndarray) -> bool:
        """A new shot (as `veil protect` finds them) or, in a folder of photos, another size."""
        nonlocal last_shape, last_thumb
        thumb = scene_thumbnail(frame)
        new = last_shape is not None and (last_shape != frame.shape or is_scene_cut(last_thumb, thumb))
        last_shape, last_thumb = frame.shape, thumb
        return new

    def detect(chunk: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if not chunk:
            return
        for pair, found in zip(chunk, detector.detect_batch([o for o, _ in chunk])):
            pending.append(pair)
            ready.extend(tracker.push(found, scene_cut=cut(pair[0])))

    try:
        chunk: list[tuple[np.ndarray, np.ndarray]] = []
        for pair in _pairs(original, protected, config.max_frames):
            chunk.append(pair)
            if len(chunk) == config.batch_size:
                detect(chunk)
                chunk = []
                drain(final=False)
        detect(chunk)
        ready.extend(tracker.flush())
        drain(final=True)
    finally:
        judge.close()
    if not frames:
        raise InputError(f"'{original}' has no frames to evaluate")
    seconds = time.perf_counter() - start
    report = {
        "schema_version": SCHEMA_VERSION,
        "original": str(original),
        "protected": str(protected),
        "settings": {**asdict(config), "detectors": list(config.detectors), "recognizers": list(config.recognizers)},
        "thresholds": {m.name: m.threshold for m in judge.recognizers},
        "frames": frames,
    }
    report.update(summarize(frames, config.detectors, config.recognizers, seconds))
    if config.attack and "veil" in config.attack_pipelines:
        report["attack"] = run_attack(judge, config)
    if config.attack and "dlib" in config.attack_pipelines:
        from veil.evaluate.attack import dlib_library_attack

        other = Path(config.attack_clean) if config.attack_clean else None
        report["attack_dlib"] = dlib_library_attack(Path(protected), Path(original), len(frames), other)
    return report


def run_attack(judge: _Judge, config: EvaluateConfig, min_faces: int = 8) -> dict:
    """Fawkes' attack (:mod:`veil.evaluate.attack`) on every track with at least ``min_faces``, or,
    with other clean footage of the person (``attack_clean``), on all protected faces at once."""
    from veil.evaluate.attack import attack_elsewhere, attack_track, clean_descriptors, other_people_descriptors

    if config.attack not in ("knn", "linear"):
        raise InputError(f"unknown attack classifier {config.attack!r}; choose knn or linear")
    footage = list(iter_frames(config.attack_clean)) if config.attack_clean else None
    out = {}
    for model in judge.recognizers:
        others = other_people_descriptors(model, config.detector)
        kept = judge.kept[model.name]
        if footage is not None:
            protected = np.stack([r[3] for r in kept]) if kept else np.zeros((0, 0), np.float32)
            result = attack_elsewhere(protected, clean_descriptors(model, footage, config.detector), others,
                                      model.name, config.attack).as_dict()
            out[model.name] = {"classifier": config.attack, "other_identities": result["other_identities"],
                               "test_clean_faces": result["test_clean_faces"],
                               "protection_success": result["protection_success"],
                               "test_source": str(config.attack_clean), "tracks": [result]}
            continue
        results = []
        for tid in sorted({t for _, t, _, _ in kept}):
            rows = [k for k in kept if k[1] == tid]
            if len(rows) < min_faces:
                continue
            frames = np.array([r[0] for r in rows])
            results.append(attack_track(tid, frames, np.stack([r[3] for r in rows]), np.stack([r[2] for r in rows]),
                                        others, model.name, config.attack).as_dict())
        tested = [r for r in results if r["protection_success"] is not None]
        n_test = sum(r["test_clean_faces"] for r in tested)
        pooled = sum(r["protection_success"] * r["test_clean_faces"] for r in tested) / n_test if n_test else None
        out[model.name] = {"classifier": config.attack, "other_identities": int(len(np.unique(others[1]))),
                           "test_clean_faces": n_test,
                           "protection_success": None if pooled is None else round(pooled, 5),
                           "test_source": "later frames of each track", "tracks": results}
    return out
