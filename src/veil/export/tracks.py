"""The detections of a run, exported (``--export-tracks FILE.json|FILE.csv``) and read back.

Every box the protection was given, per frame: its track, kind (face, person, plate), score,
whether the detector found it in that frame or the tracker filled it in, and whether
``--keep-face`` left it as it is. Frames masked whole (a failed detection or protection, a
damaged stretch, a late live frame) are listed with the reason. `veil review` reads the same file.

The JSON schema (``"schema": "veil.tracks"``, ``"version": 1``)::

    {"schema": "veil.tracks", "version": 1,
     "video": {"path": "clip.mp4", "width": 640, "height": 360, "fps": "30000/1001"},
     "frames": 120,                      # frames written
     "detector": "centerface", "targets": ["face", "person"],
     "columns": ["frame", "time_s", "x1", "y1", "x2", "y2", "score", "detected", "kept"],
     "tracks": [{"id": 0, "kind": "face", "first_frame": 3, "last_frame": 97,
                 "boxes": [[3, 0.1, 212.4, 80.2, 290.0, 181.7, 0.93, true, false], ...]}, ...],
     "frames_masked": [[41, "detection failed"], ...]}

``frame`` is the source's frame index (from 0, display order), ``time_s`` its time in seconds,
boxes are ``x1 y1 x2 y2`` in pixels of the upright frame (before ``--mask-scale`` grows them),
``score`` 0 where the tracker filled the box in (``detected`` false), ``kept``: left unprotected.

The CSV has one row per box, frame by frame, with the columns ``frame, time_s, track, kind, x1,
y1, x2, y2, score, detected, kept, note``; a frame masked whole is one row of kind ``frame``, the
whole frame as its box, track -1 and the reason as its note.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import InputError
from veil.faces import KINDS, Faces, centre_points
from veil.media.outputs import discard, publish, temporary_beside

__all__ = ["SCHEMA", "VERSION", "COLUMNS", "CSV_COLUMNS", "TrackLog", "Tracks", "write_tracks", "read_tracks",
           "track_formats"]

SCHEMA, VERSION = "veil.tracks", 1
COLUMNS = ("frame", "time_s", "x1", "y1", "x2", "y2", "score", "detected", "kept")
CSV_COLUMNS = ("frame", "time_s", "track", "kind", "x1", "y1", "x2", "y2", "score", "detected", "kept", "note")
_SUFFIXES = (".json", ".csv")


def track_formats() -> tuple[str, ...]:
    return _SUFFIXES


def _round(value: float, digits: int) -> float:
    return round(float(value), digits)


@dataclass
class TrackLog:
    """The boxes of a run as the frame loop hands them to the protection (filled in by it)."""

    rows: list[tuple] = field(default_factory=list)  # (frame, time_s, track, kind, x1, y1, x2, y2, score, detected, kept)
    masked: dict[int, str] = field(default_factory=dict)  # frame -> why it was masked whole
    frames: int = 0

    def add(self, frame: int, time_s: float, faces: Faces, kept: np.ndarray | None = None) -> None:
        """The final boxes of one frame (`kept`: (N,) bool, those left as they are)."""
        self.frames += 1
        t = _round(time_s, 4) if math.isfinite(time_s) else None
        for i in range(len(faces)):
            x1, y1, x2, y2 = (_round(v, 2) for v in faces.boxes[i])
            self.rows.append((frame, t, int(faces.track_ids[i]), int(faces.kinds[i]), x1, y1, x2, y2,
                              _round(faces.scores[i], 4), not bool(faces.filled[i]),
                              bool(kept[i]) if kept is not None else False))

    def mask_whole(self, frame: int, reason: str) -> None:
        self.masked.setdefault(frame, reason)


@dataclass
class Tracks:
    """An exported track file, read back: one row per box, sorted by frame then track.

    Shape:
        - frames, track_ids, kinds: (M,) int; boxes: (M, 4) float32; scores: (M,) float32
        - detected, kept: (M,) bool; times: (M,) float64 (NaN where the frame had no time)
    """

    video: dict[str, Any]
    frame_count: int
    detector: str
    targets: list[str]
    frames: np.ndarray
    times: np.ndarray
    track_ids: np.ndarray
    kinds: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    detected: np.ndarray
    kept: np.ndarray
    masked: dict[int, str]

    def at(self, frame: int) -> Faces:
        """The boxes of one frame, as the protection was given them (kept ones included)."""
        sel = self.frames == frame
        boxes = self.boxes[sel]
        return Faces(boxes, centre_points(boxes), self.scores[sel], self.track_ids[sel], ~self.detected[sel],
                     self.kinds[sel])

    def track(self, track_id: int) -> np.ndarray:
        """Indices of the rows of one track, in frame order."""
        return np.flatnonzero(self.track_ids == track_id)


def _header(log: TrackLog, video: dict[str, Any], detector: str, targets: list[str]) -> dict[str, Any]:
    return {"schema": SCHEMA, "version": VERSION, "video": video, "frames": log.frames, "detector": detector,
            "targets": targets}


def _json_text(log: TrackLog, header: dict[str, Any]) -> str:
    tracks: dict[int, dict[str, Any]] = {}
    for frame, t, track, kind, x1, y1, x2, y2, score, detected, kept in log.rows:
        entry = tracks.setdefault(track, {"id": track, "kind": KINDS[kind], "first_frame": frame,
                                          "last_frame": frame, "boxes": []})
        entry["first_frame"], entry["last_frame"] = min(entry["first_frame"], frame), max(entry["last_frame"], frame)
        entry["boxes"].append([frame, t, x1, y1, x2, y2, score, detected, kept])
    data = dict(header, columns=list(COLUMNS), tracks=[tracks[k] for k in sorted(tracks)],
                frames_masked=[[f, r] for f, r in sorted(log.masked.items())])
    return json.dumps(data, separators=(",", ":")) + "\n"


def _csv_text(log: TrackLog, header: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    width, height = header["video"].get("width", 0), header["video"].get("height", 0)
    rows = sorted(log.rows, key=lambda r: (r[0], r[2]))
    masked = sorted(log.masked.items())
    m = 0
    for row in rows + [None]:
        while m < len(masked) and (row is None or masked[m][0] <= row[0]):
            writer.writerow([masked[m][0], "", -1, "frame", 0, 0, width, height, "", "", "", masked[m][1]])
            m += 1
        if row is None:
            break
        frame, t, track, kind, x1, y1, x2, y2, score, detected, kept = row
        writer.writerow([frame, "" if t is None else t, track, KINDS[kind], x1, y1, x2, y2, score,
                         int(detected), int(kept), ""])
    return out.getvalue()


def write_tracks(path: str | Path, log: TrackLog, *, video: dict[str, Any], detector: str,
                 targets: list[str]) -> Path:
    """Write `log` to `path` (.json or .csv, by its extension), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"--export-tracks {str(path)!r}: give a .json or .csv file")
    header = _header(log, video, detector, targets)
    text = _json_text(log, header) if suffix == ".json" else _csv_text(log, header)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        tmp.write_text(text)
    except BaseException:
        discard(tmp)
        raise
    publish(tmp, path)
    return path


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"{str(path)!r} is not a veil track file: {what}")


def _from_rows(path: Path, rows: list[tuple], masked: dict[int, str], header: dict[str, Any]) -> Tracks:
    rows.sort(key=lambda r: (r[0], r[2]))
    n = len(rows)
    col = list(zip(*rows)) if rows else [()] * 11
    return Tracks(video=header.get("video", {}), frame_count=int(header.get("frames", 0)),
                  detector=str(header.get("detector", "")), targets=list(header.get("targets", [])),
                  frames=np.asarray(col[0], np.int64).reshape(n),
                  times=np.asarray([np.nan if t is None else t for t in col[1]], np.float64).reshape(n),
                  track_ids=np.asarray(col[2], np.int64).reshape(n), kinds=np.asarray(col[3], np.int8).reshape(n),
                  boxes=np.asarray(list(zip(*col[4:8])), np.float32).reshape(n, 4),
                  scores=np.asarray(col[8], np.float32).reshape(n), detected=np.asarray(col[9], bool).reshape(n),
                  kept=np.asarray(col[10], bool).reshape(n), masked=masked)


def _kind(path: Path, name: str) -> int:
    if name not in KINDS:
        raise _bad(path, f"unknown kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS.index(name)


def _read_json(path: Path, text: str) -> Tracks:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path, f"invalid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise _bad(path, f"its \"schema\" is not {SCHEMA!r}")
    if data.get("version") != VERSION:
        raise _bad(path, f"version {data.get('version')!r}; this veil reads version {VERSION}")
    if data.get("columns") != list(COLUMNS):
        raise _bad(path, f"its \"columns\" are not {list(COLUMNS)}")
    rows = []
    try:
        for track in data["tracks"]:
            tid, kind = int(track["id"]), _kind(path, track["kind"])
            for frame, t, x1, y1, x2, y2, score, detected, kept in track["boxes"]:
                rows.append((int(frame), t, tid, kind, x1, y1, x2, y2, score, bool(detected), bool(kept)))
        masked = {int(f): str(r) for f, r in data.get("frames_masked", [])}
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"a track entry is malformed ({type(exc).__name__}: {exc})") from None
    return _from_rows(path, rows, masked, data)


def _read_csv(path: Path, text: str) -> Tracks:
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != list(CSV_COLUMNS):
        raise _bad(path, f"its header is not {','.join(CSV_COLUMNS)}")
    rows, masked = [], {}
    width = height = 0
    try:
        for line, r in enumerate(reader, start=2):
            if len(r) != len(CSV_COLUMNS):
                raise ValueError(f"line {line} has {len(r)} fields")
            if r[3] == "frame":
                masked[int(r[0])] = r[11]
                width, height = max(width, int(float(r[6]))), max(height, int(float(r[7])))
                continue
            rows.append((int(r[0]), float(r[1]) if r[1] else None, int(r[2]), _kind(path, r[3]), float(r[4]),
                         float(r[5]), float(r[6]), float(r[7]), float(r[8]), r[9] == "1", r[10] == "1"))
    except ValueError as exc:
        raise _bad(path, str(exc)) from None
    header = {"video": {"width": width, "height": height} if masked else {}, "frames": 0}
    return _from_rows(path, rows, masked, header)


def read_tracks(path: str | Path) -> Tracks:
    """Read a track file written by `write_tracks` (JSON or CSV, by its extension).

    The CSV holds the boxes and masked frames but not the video's header (size, fps, frame count).
    Raises `InputError` naming what is wrong with a file that is not one.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the track file {str(path)!r}: {exc}") from None
    if path.suffix.lower() == ".csv":
        return _read_csv(path, text)
    return _read_json(path, text)
