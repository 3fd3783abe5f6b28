"""Face tracks across frames: ids, smoothing, and gap filling so that no face slips through.

A detector misses a face now and then (motion blur, a turned head); a blur that vanishes for one
frame shows the face to anyone who steps through the video. The tracker therefore:

- matches detections to tracks by overlap with the track's predicted box (constant velocity,
  carried along by the camera's motion where the caller measures it, :mod:`veil.detect.motion`),
  a detection only to a track of its own kind (a face never continues a person's track);
- keeps a missed track alive for `max_missing` frames at its predicted, slowly growing box;
- holds the last `lookahead` frames back, so that when a track is detected again after a gap the
  missing frames get boxes *interpolated* between the two detections, and a new track is also
  drawn `lookahead` frames back (a face is usually visible a little before it is first detected);
- ends every track at a scene cut, so no box is carried (smeared) into a different shot;
- outputs the union of the raw and the smoothed box: smoothing removes jitter but never uncovers.

Frames come out of `push` in order, `lookahead` frames late; `flush` returns the rest.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from veil.faces import FACE, Faces

__all__ = ["TrackerConfig", "Tracker", "iou_matrix", "scene_thumbnail", "is_scene_cut"]


@dataclass(frozen=True)
class TrackerConfig:
    iou_match: float = 0.2  # least overlap with a track's predicted box to continue it
    max_missing: int = 5  # frames a track is kept alive without a detection
    lookahead: int = 15  # frames held back for interpolation and back-filling (live: 1)
    smoothing: float = 0.5  # weight of the new detection in the smoothed box
    grow_per_missed: float = 0.05  # relative growth of a predicted box per missed frame


def _intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of the intersection of every pair. Shape: a (N, 4), b (M, 4) -> (N, M)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair. Shape: a (N, 4), b (M, 4) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    inter = _intersections(a, b)
    return inter / np.maximum(_areas(a)[:, None] + _areas(b)[None, :] - inter, 1e-9)


def cover_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The share of each box of `a` that each box of `b` covers. Shape: a (N, 4), b (M, 4) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    return _intersections(a, b) / np.maximum(_areas(a)[:, None], 1e-9)


def scene_thumbnail(image: np.ndarray) -> np.ndarray:
    """A tiny grey thumbnail (32x18) used to find scene cuts. Shape: (H, W, 3) -> (18, 32) float32."""
    # Every 4th pixel of every 4th row is plenty for a 32x18 average, at 1/16 of the reads (taken
    # by OpenCV's nearest-neighbour resize, 2-3x faster than NumPy's strided copy).
    step = max(1, min(image.shape[0] // 72, image.shape[1] // 128, 4))
    sparse = cv2.resize(image, (image.shape[1] // step, image.shape[0] // step), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(sparse, (32, 18), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def is_scene_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float = 40.0) -> bool:
    """Whether two consecutive thumbnails belong to different shots (mean absolute grey difference)."""
    return previous is not None and float(np.abs(current - previous).mean()) > threshold


def _grow(box: np.ndarray, factor: float) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) / 2 * factor, (box[3] - box[1]) / 2 * factor
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], np.float32)


def _move_points(points: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Landmarks carried from box `old` to box `new` (same relative position)."""
    sx = (new[2] - new[0]) / max(old[2] - old[0], 1e-6)
    sy = (new[3] - new[1]) / max(old[3] - old[1], 1e-6)
    return np.stack([(points[:, 0] - old[0]) * sx + new[0], (points[:, 1] - old[1]) * sy + new[1]], axis=1)


@dataclass
class _Entry:
    box: np.ndarray
    points: np.ndarray
    score: float
    filled: bool
    kind: int = 0


@dataclass
class _Track:
    id: int
    box: np.ndarray  # last raw detection
    points: np.ndarray
    smooth: np.ndarray
    last_frame: int
    kind: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # its own, the camera's apart
    missing: int = 0
    carried: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # camera motion since last seen

    def predicted(self, frame: int) -> np.ndarray:
        return self.box + self.carried + self.velocity * (frame - self.last_frame)


class Tracker:
    """Assigns track ids and fills gaps; see the module docstring.

    >>> tracker = Tracker()
    >>> ready = tracker.push(faces)  # doctest: +SKIP  (list of Faces for earlier frames, in order)
    """

    def __init__(self, config: TrackerConfig = TrackerConfig(), first_id: int = 0) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._buffer: deque[dict[int, _Entry]] = deque()
        self._buffer_start = 0  # frame index of self._buffer[0]
        self._cut_at = 0  # first frame of the current shot
        self._frame = 0
        self._next_id = first_id
        self.tracks_started = 0
        self.faces_filled = 0
        self.assigned = np.zeros(0, np.int64)  # track id of each face of the latest `push`
        self.started: list[int] = []  # the tracks the latest `push` started

    def push(self, faces: Faces, scene_cut: bool = False, camera: tuple[float, float] = (0.0, 0.0)) -> list[Faces]:
        """Add the detections of the next frame; returns the frames that are final now.

        `camera`: how far the picture moved since the previous frame, (dx, dy) pixels
        (:class:`veil.detect.motion.CameraMotion`); every track is carried along by it."""
        t = self._frame
        if scene_cut:
            self._tracks = []
            self._cut_at = t
        if camera != (0.0, 0.0):
            shift = np.array([camera[0], camera[1], camera[0], camera[1]], np.float32)
            for track in self._tracks:
                track.carried = track.carried + shift
        entries: dict[int, _Entry] = {}
        self._buffer.append(entries)
        matched = self._match(faces, t)
        self.started = []
        self.assigned = np.full(len(faces), -1, np.int64)
        for track, det in matched:
            self._continue(track, faces, det, t, entries)
            self.assigned[det] = track.id
        taken = {d for _, d in matched}
        for track in [tr for tr in self._tracks if all(tr is not m for m, _ in matched)]:
            track.missing += 1
            if track.missing > self.config.max_missing:
                self._tracks.remove(track)
                continue
            box = _grow(track.predicted(t), 1 + self.config.grow_per_missed * track.missing)
            entries[track.id] = _Entry(box, _move_points(track.points, track.box, box), 0.0, True, track.kind)
        for d in range(len(faces)):
            if d not in taken:
                self.assigned[d] = self._start(faces, d, t, entries)
        self._frame += 1
        return self._pop(keep=self.config.lookahead)

    def flush(self) -> list[Faces]:
        """The frames still held back (call at the end of the video)."""
        return self._pop(keep=0)

    def held_back(self) -> int:
        """How many frames before the latest the tracker still holds in this shot (what `place`
        can reach)."""
        return max(0, self._frame - 1 - max(self._buffer_start, self._cut_at))

    def place(self, track_id: int, back: int, box: np.ndarray, points: np.ndarray, score: float) -> None:
        """A detection of a track on a frame it holds, `back` frames before the latest (1 <=
        back <= `held_back()`): a look back from where the track started found its face there. It
        replaces the box drawn back there, which only guessed."""
        if not 1 <= back <= self.held_back():
            raise ValueError(f"no frame held {back} frames back")
        track = next(tr for tr in self._tracks if tr.id == track_id)
        entries = self._buffer[self._frame - 1 - back - self._buffer_start]
        entries[track_id] = _Entry(np.asarray(box, np.float32), np.asarray(points, np.float32), score, False,
                                   track.kind)

    def search_regions(self, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Where the faces of the live face tracks may be in the next frame: each track's predicted
        box grown on every side by `margin` of its size for every frame since it was last seen
        (and by one more), and by twice the distance its velocity says it moved (the velocity is
        smoothed, so it lags a face that speeds up); overlapping regions merged. A small face in a
        camera pan moves most of its size in a frame. Returns (regions (R, 4) xyxy, sizes (R,): the
        smallest face of each region)."""
        t = self._frame
        boxes, sizes = [], []
        for track in self._tracks:
            if track.kind != FACE:
                continue
            box = track.predicted(t)
            size = float(max(box[2] - box[0], box[3] - box[1], 1.0))
            gap = t - track.last_frame
            pad = margin * size * (1 + gap) + 2.0 * float(np.abs(track.velocity).max()) * gap
            boxes.append(box + np.array([-pad, -pad, pad, pad], np.float32))
            sizes.append(size)
        merged = True
        while merged and len(boxes) > 1:
            merged = False
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if _intersections(boxes[i][None], boxes[j][None])[0, 0] > 0:
                        boxes[i], sizes[i] = _union(boxes[i], boxes[j]), min(sizes[i], sizes[j])
                        del boxes[j], sizes[j]
                        merged = True
                        break
                if merged:
                    break
        return np.array(boxes, np.float32).reshape(-1, 4), np.array(sizes, np.float32)

    def _match(self, faces: Faces, t: int) -> list[tuple[_Track, int]]:
        if not self._tracks or len(faces) == 0:
            return []
        predicted = np.stack([tr.predicted(t) for tr in self._tracks])
        iou = iou_matrix(predicted, faces.boxes)
        iou[np.array([tr.kind for tr in self._tracks])[:, None] != faces.kinds[None, :]] = -1
        pairs = []
        while iou.size and iou.max() >= self.config.iou_match:
            i, d = np.unravel_index(int(iou.argmax()), iou.shape)
            pairs.append((self._tracks[i], int(d)))
            iou[i, :] = -1
            iou[:, d] = -1
        return pairs

    def _continue(self, track: _Track, faces: Faces, d: int, t: int, entries: dict[int, _Entry]) -> None:
        box, points = faces.boxes[d], faces.landmarks[d]
        gap = t - track.last_frame
        if gap > 1:
            self._interpolate(track, box, points, t)
        a = self.config.smoothing
        track.velocity = (0.5 * track.velocity + 0.5 * (box - track.box - track.carried) / gap).astype(np.float32)
        track.smooth = (a * box + (1 - a) * (track.smooth + track.carried + track.velocity * gap)).astype(np.float32)
        track.box, track.points, track.last_frame, track.missing = box, points, t, 0
        track.carried = np.zeros(4, np.float32)
        entries[track.id] = _Entry(_union(box, track.smooth), points, float(faces.scores[d]), False, track.kind)

    def _interpolate(self, track: _Track, box: np.ndarray, points: np.ndarray, t: int) -> None:
        """Replace the predicted boxes of a gap by the line between the two detections."""
        s = track.last_frame
        for f in range(max(s + 1, self._buffer_start), t):
            w = (f - s) / (t - s)
            ibox = ((1 - w) * track.box + w * box).astype(np.float32)
            ipts = ((1 - w) * track.points + w * points).astype(np.float32)
            frame = self._buffer[f - self._buffer_start]
            old = frame.get(track.id)
            # The union with the earlier prediction keeps whatever was covered already.
            frame[track.id] = _Entry(ibox if old is None else _union(old.box, ibox), ipts, 0.0, True, track.kind)

    def _start(self, faces: Faces, d: int, t: int, entries: dict[int, _Entry]) -> int:
        box, points = faces.boxes[d], faces.landmarks[d]
        track = _Track(self._next_id, box, points, box.copy(), t, kind=int(faces.kinds[d]))
        self._next_id += 1
        self.tracks_started += 1
        self.started.append(track.id)
        self._tracks.append(track)
        entries[track.id] = _Entry(box, points, float(faces.scores[d]), False, track.kind)
        for f in range(max(t - self.config.lookahead, self._buffer_start, self._cut_at), t):
            frame = self._buffer[f - self._buffer_start]
            if track.id not in frame:
                grown = _grow(box, 1 + self.config.grow_per_missed * (t - f))
                frame[track.id] = _Entry(grown, _move_points(points, box, grown), 0.0, True, track.kind)
        return track.id

    def _pop(self, keep: int) -> list[Faces]:
        out = []
        while len(self._buffer) > keep:
            entries = self._buffer.popleft()
            self._buffer_start += 1
            out.append(self._to_faces(entries))
        return out

    def _to_faces(self, entries: dict[int, _Entry]) -> Faces:
        if not entries:
            return Faces.empty()
        ids = sorted(entries)
        e = [entries[i] for i in ids]
        filled = np.array([x.filled for x in e])
        self.faces_filled += int(filled.sum())
        return Faces(np.stack([x.box for x in e]), np.stack([x.points for x in e]),
                     np.array([x.score for x in e]), np.array(ids), filled, np.array([x.kind for x in e]))
