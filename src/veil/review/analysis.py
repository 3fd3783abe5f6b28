"""What `veil review` works on: the video detected and tracked once (cached), its frames for the
page, and a box a person drew followed through the frames.

The analysis is the automatic pass itself (`veil.pipeline.protect_video` as a dry run with
``--export-tracks``), so what the page shows is what ``veil protect`` would have protected. It is
cached under ``$VEIL_HOME/review/<key>/`` (the video's sha256 and the options that decide what is
found), with every frame as a JPEG for the page.

A drawn box is followed forward and backward from its frame with the tracker's own rule (a
detection continues it when it overlaps the box's last place, IoU >= `TrackerConfig.iou_match`)
and, where the detector finds nothing there (it missed this face: that is why it was drawn), by
the box's appearance (normalised cross-correlation in a window around its last place, OpenCV's
``matchTemplate``). It stops where neither holds (the person is lost), at a scene cut, or at the
ends of the video.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from veil.detect import Detector
from veil.detect.track import iou_matrix, is_scene_cut, scene_thumbnail
from veil.errors import InputError
from veil.export.review import Review, load_review, sidecar_path
from veil.media.read import read_frames
from veil.models.store import sha256_file, veil_home
from veil.pipeline import ProtectOptions, protect_video

__all__ = ["Analysis", "analyse", "follow", "APPEARANCE_MATCH"]

APPEARANCE_MATCH = 0.6  # least normalised correlation for the box's appearance to count as found
_FIELDS = ("targets", "people_threshold", "detector", "threshold", "detect_size", "detect_every", "tracker")


@dataclass
class Analysis:
    """A video's automatic pass, cached: `folder` holds ``tracks.json`` and ``frames/NNNNNN.jpg``."""

    video: Path
    folder: Path
    sha256: str
    frames: int
    width: int
    height: int
    fps: str

    def frame_path(self, index: int) -> Path:
        if not 0 <= index < self.frames:
            raise InputError(f"frame {index} is outside the video (0-{self.frames - 1})")
        return self.folder / "frames" / f"{index:06d}.jpg"

    def image(self, index: int) -> np.ndarray:
        """Frame `index` as (H, W, 3) uint8 RGB (from the cache's JPEG)."""
        return cv2.cvtColor(cv2.imread(str(self.frame_path(index))), cv2.COLOR_BGR2RGB)

    def tracks(self) -> dict:
        return json.loads((self.folder / "tracks.json").read_text())

    def new_review(self) -> Review:
        video = {"path": self.video.name, "sha256": self.sha256, "frames": self.frames, "width": self.width,
                 "height": self.height, "fps": self.fps}
        return Review(video, self.tracks(), [])

    def review(self) -> Review:
        """The video's sidecar if it has one for this very file, else a new review."""
        path = sidecar_path(self.video)
        if path.is_file():
            review = load_review(path)
            if review.video["sha256"] == self.sha256:
                return review
        return self.new_review()


def _key(sha: str, options: ProtectOptions) -> str:
    decided = json.dumps({f: getattr(options, f) for f in _FIELDS}, sort_keys=True, default=str)
    return f"{sha[:16]}-{hashlib.sha256(decided.encode()).hexdigest()[:12]}"


def analyse(video: str | Path, options: ProtectOptions, *, detector: Detector | None = None,
            progress: Callable[[int, int], None] | None = None) -> Analysis:
    """Detect and track `video` once (or take the cached pass) and keep its frames for the page."""
    video = Path(video).resolve()
    if not video.is_file():
        raise InputError(f"{str(video)!r} is not a video file")
    sha = sha256_file(video)
    folder = veil_home() / "review" / _key(sha, options)
    done = folder / "analysis.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        return Analysis(video, folder, sha, meta["frames"], meta["width"], meta["height"], meta["fps"])
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    run = replace(options, dry_run=True, export_tracks=str(folder / "tracks.json"), export_masks=None, review=None)
    summary = protect_video(video, None, run, detector=detector, progress=progress)
    count = 0
    for index, rgb in enumerate(read_frames(video)):
        cv2.imwrite(str(folder / "frames" / f"{index:06d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        count = index + 1
    if count != summary.frames:
        raise InputError(f"{str(video)!r} decoded to {count} frames for the page but {summary.frames} for the pass")
    meta = {"frames": count, "width": summary.width, "height": summary.height, "fps": summary.fps}
    tmp = done.with_name(f".{done.name}.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, done)
    return Analysis(video, folder, sha, count, summary.width, summary.height, summary.fps)


def _match(image: np.ndarray, template: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
    """Where `template` (the box's last look) best fits in a window around `box`: the moved box
    and the normalised correlation there."""
    h, w = image.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1, y1 = int(max(0, box[0] - 0.5 * bw)), int(max(0, box[1] - 0.5 * bh))
    x2, y2 = int(min(w, box[2] + 0.5 * bw)), int(min(h, box[3] + 0.5 * bh))
    window = image[y1:y2, x1:x2]
    if window.shape[0] < template.shape[0] or window.shape[1] < template.shape[1]:
        return box, 0.0
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (mx, my) = cv2.minMaxLoc(scores)
    moved = np.array([x1 + mx, y1 + my, x1 + mx + template.shape[1], y1 + my + template.shape[0]], np.float32)
    return moved, float(best)


def _crop(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return grey[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]


def follow(analysis: Analysis, detector: Detector, frame: int, box: list[float], iou_match: float = 0.2,
           ) -> list[list[float]]:
    """The drawn `box` on `frame`, followed both ways until the person is lost: [[frame, x1, y1, x2, y2], ...]
    in frame order (the drawn frame included)."""
    start = np.asarray(box, np.float32)
    h, w = analysis.height, analysis.width
    start = np.clip(start, 0, [w, h, w, h]).astype(np.float32)
    if start[2] - start[0] < 4 or start[3] - start[1] < 4:
        raise InputError("a drawn box must be at least 4 pixels wide and high, inside the frame")
    rows = {frame: start}
    for step in (1, -1):
        current = start
        image = analysis.image(frame)
        template = _crop(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), current)
        previous_thumb = scene_thumbnail(image)
        index = frame + step
        while 0 <= index < analysis.frames:
            image = analysis.image(index)
            thumb = scene_thumbnail(image)
            if is_scene_cut(previous_thumb, thumb):
                break
            previous_thumb = thumb
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            found = detector.detect(image)
            overlap = iou_matrix(current[None], found.boxes)[0] if len(found) else np.zeros(0)
            if len(overlap) and overlap.max() >= iou_match:
                current = found.boxes[int(overlap.argmax())].astype(np.float32)
                template = _crop(grey, current)
            else:
                moved, score = _match(grey, template, current)
                if score < APPEARANCE_MATCH:
                    break
                current = moved
            rows[index] = current
            index += step
    return [[f, *(round(float(v), 2) for v in rows[f])] for f in sorted(rows)]


def thumbnail(analysis: Analysis, review: Review, track: int, size: int = 96) -> bytes:
    """A JPEG of a track's person: its best detected box (or its first box), as a square crop."""
    best = None
    for index in range(analysis.frames):
        for b in review.boxes(index):
            if b["track"] == track and (best is None or b["score"] > best[2]):
                best = (index, b["box"], b["score"])
        if best is not None and best[2] > 0.9:
            break
    if best is None:
        raise InputError(f"there is no track {track}")
    image = analysis.image(best[0])
    x1, y1, x2, y2 = best[1]
    side = max(x2 - x1, y2 - y1) * 1.2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    crop = image[int(max(0, cy - side / 2)):int(max(1, cy + side / 2)), int(max(0, cx - side / 2)):int(max(1, cx + side / 2))]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes()
