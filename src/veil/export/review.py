"""The decisions of a review, saved beside the video as ``clip.veil-review.json``, and applied.

A sidecar holds what the automatic pass found (a `veil.tracks` export of the video, embedded) and,
in order, the edits a person made on it. `veil protect clip.mp4 --review clip.veil-review.json`
then protects exactly the boxes the page showed: no detection runs again.

The JSON (``"schema": "veil.review"``, ``"version": 1``)::

    {"schema": "veil.review", "version": 1,
     "video": {"path": "clip.mp4", "sha256": "…", "frames": 72, "width": 640, "height": 360},
     "tracks": {…a veil.tracks document, see veil.export.tracks…},
     "edits": [
       {"op": "protect", "track": 3, "on": false, "from": 0, "to": 71},   # leave track 3 as it is
       {"op": "add", "track": 1000, "kind": "face",                      # a face the detector missed
        "boxes": [[frame, x1, y1, x2, y2], …]},
       {"op": "box", "track": 0, "frame": 12, "box": [x1, y1, x2, y2]},  # a box moved or resized
       {"op": "merge", "into": 0, "track": 5},                           # track 5 is track 0's person
       {"op": "region", "track": 2000, "from": 30, "to": 60, "box": [x1, y1, x2, y2]}]}

``video.path`` is relative to the sidecar's folder; ``sha256`` is the video file's: a sidecar is
refused for any other file. ``from``/``to`` are frame indices, both included. Edits apply in
order (a later one wins); ``protect`` with ``on: true`` undoes an earlier ``on: false``. A track's
kept flag from the export (``--keep-face``) counts as ``on: false`` on that frame.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import InputError
from veil.export.tracks import COLUMNS as TRACK_COLUMNS
from veil.export.tracks import SCHEMA as TRACK_SCHEMA
from veil.export.tracks import VERSION as TRACK_VERSION
from veil.faces import KINDS, REGION, Faces, centre_points
from veil.media.outputs import discard, publish, temporary_beside

__all__ = ["SCHEMA", "VERSION", "OPS", "Review", "sidecar_path", "load_review", "save_review", "check_edit",
           "check_video"]

SCHEMA, VERSION = "veil.review", 1
OPS = ("protect", "add", "box", "merge", "region")


def sidecar_path(video: str | Path) -> Path:
    """``clip.mp4`` -> ``clip.veil-review.json`` beside it."""
    video = Path(video)
    return video.with_name(f"{video.stem}.veil-review.json")


def _fail(where: str, key: str, why: str) -> InputError:
    return InputError(f"{where}: {key} {why}")


def _int(value: Any, where: str, key: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _fail(where, key, f"must be a whole number >= {least}, got {value!r}")
    return value


def _box(value: Any, where: str, key: str) -> list[float]:
    if (not isinstance(value, list) or len(value) != 4 or
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise _fail(where, key, f"must be 4 numbers [x1, y1, x2, y2], got {value!r}")
    if not (value[2] > value[0] and value[3] > value[1]):
        raise _fail(where, key, f"must have x2 > x1 and y2 > y1, got {value!r}")
    return [float(v) for v in value]


def check_edit(edit: Any, where: str) -> dict[str, Any]:
    """One edit, checked; raises `InputError` naming the key that is wrong."""
    if not isinstance(edit, dict):
        raise InputError(f"{where} must be an object with an \"op\"")
    op = edit.get("op")
    if op not in OPS:
        raise _fail(where, "op", f"must be one of {', '.join(OPS)}, got {op!r}")
    out: dict[str, Any] = {"op": op}
    if op in ("protect", "add", "box", "region", "merge"):
        out["track"] = _int(edit.get("track"), where, "track")
    if op == "protect":
        if not isinstance(edit.get("on"), bool):
            raise _fail(where, "on", f"must be true or false, got {edit.get('on')!r}")
        out["on"] = edit["on"]
    if op in ("protect", "region"):
        out["from"] = _int(edit.get("from", 0), where, "from")
        out["to"] = _int(edit.get("to", 2**31 - 1), where, "to")
        if out["to"] < out["from"]:
            raise _fail(where, "to", f"must not be before from ({out['from']}), got {out['to']}")
    if op == "region":
        out["box"] = _box(edit.get("box"), where, "box")
    if op == "box":
        out["frame"] = _int(edit.get("frame"), where, "frame")
        out["box"] = _box(edit.get("box"), where, "box")
    if op == "merge":
        out["into"] = _int(edit.get("into"), where, "into")
        if out["into"] == out["track"]:
            raise _fail(where, "into", "must name another track")
    if op == "add":
        kind = edit.get("kind", "face")
        if kind not in KINDS:
            raise _fail(where, "kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
        out["kind"] = kind
        boxes = edit.get("boxes")
        if not isinstance(boxes, list) or not boxes:
            raise _fail(where, "boxes", "must be a non-empty list of [frame, x1, y1, x2, y2]")
        rows = []
        for i, row in enumerate(boxes):
            if not isinstance(row, list) or len(row) != 5:
                raise _fail(where, f"boxes[{i}]", f"must be [frame, x1, y1, x2, y2], got {row!r}")
            rows.append([_int(row[0], where, f"boxes[{i}][0]"), *_box(row[1:], where, f"boxes[{i}]")])
        out["boxes"] = rows
    return out


@dataclass
class Review:
    """A review: the video it belongs to, the automatic pass's boxes and the edits on them."""

    video: dict[str, Any]
    tracks: dict[str, Any]
    edits: list[dict[str, Any]] = field(default_factory=list)
    _rows: dict[int, list[tuple[int, int, list[float], bool, bool, float]]] | None = field(default=None, repr=False)
    _adds: tuple[tuple[int, int], dict[int, dict[int, list[float]]]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, "video": self.video, "tracks": self.tracks,
                "edits": self.edits}

    @property
    def frame_count(self) -> int:
        return int(self.video["frames"])

    def _base(self) -> dict[int, list[tuple[int, int, list[float], bool, bool, float]]]:
        """frame -> [(track, kind, box, detected, kept, score)] of the automatic pass."""
        if self._rows is None:
            rows: dict[int, list] = {}
            for track in self.tracks["tracks"]:
                kind = KINDS.index(track["kind"])
                for frame, _t, x1, y1, x2, y2, score, detected, kept in track["boxes"]:
                    rows.setdefault(int(frame), []).append((int(track["id"]), kind, [x1, y1, x2, y2],
                                                            bool(detected), bool(kept), float(score)))
            self._rows = rows
        return self._rows

    def boxes(self, frame: int, edits: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Every box of a frame after the edits (all of them, or `edits`): dicts with track, kind,
        box, detected, protected (False: left as it is), source ("auto", "added", "region")."""
        edits = self.edits if edits is None else edits
        merged: dict[int, int] = {}
        for e in edits:
            if e["op"] == "merge":
                merged[e["track"]] = e["into"]

        def root(track: int) -> int:
            seen = set()
            while track in merged and track not in seen:
                seen.add(track)
                track = merged[track]
            return track

        out: dict[int, dict[str, Any]] = {}
        for track, kind, box, detected, kept, score in self._base().get(frame, []):
            out[track] = {"track": track, "kind": KINDS[kind], "box": list(box), "detected": detected,
                          "score": score, "protected": not kept, "source": "auto"}
        for e in edits:
            if e["op"] == "add":
                box = self._added(edits)[id(e)].get(frame)
                if box is not None:
                    out[e["track"]] = {"track": e["track"], "kind": e["kind"], "box": list(box), "detected": False,
                                       "score": 0.0, "protected": True, "source": "added"}
            elif e["op"] == "region" and e["from"] <= frame <= e["to"]:
                out[e["track"]] = {"track": e["track"], "kind": KINDS[REGION], "box": list(e["box"]),
                                   "detected": False, "score": 0.0, "protected": True, "source": "region"}
        for e in edits:
            if e["op"] == "box" and e["frame"] == frame:
                for b in out.values():
                    if b["track"] == e["track"]:
                        b["box"] = list(e["box"])
        for b in out.values():
            b["track"] = root(b["track"])
        for e in edits:
            if e["op"] == "protect" and e["from"] <= frame <= e["to"]:
                for b in out.values():
                    if b["track"] == root(e["track"]):
                        b["protected"] = e["on"]
        return list(out.values())

    def _added(self, edits: list[dict[str, Any]]) -> dict[int, dict[int, list[float]]]:
        """Each ``add`` edit's boxes by frame (built once per list of edits: a long video's added
        track has a box on thousands of frames, and every frame asks)."""
        key = (id(edits), len(edits))
        if self._adds is None or self._adds[0] != key:
            self._adds = (key, {id(e): {f: box for f, *box in e["boxes"]} for e in edits if e["op"] == "add"})
        return self._adds[1]

    def at(self, frame: int) -> Faces:
        """The boxes to protect on a frame (those left as they are removed), as `Faces`."""
        keep = [b for b in self.boxes(frame) if b["protected"]]
        if not keep:
            return Faces.empty()
        boxes = np.array([b["box"] for b in keep], np.float32)
        return Faces(boxes, centre_points(boxes), np.array([b["score"] for b in keep]),
                     np.array([b["track"] for b in keep]), np.array([not b["detected"] for b in keep]),
                     np.array([KINDS.index(b["kind"]) for b in keep]))


def _check(data: Any, where: str) -> Review:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise _fail(where, "schema", f"must be {SCHEMA!r} (is this a veil review sidecar?)")
    if data.get("version") != VERSION:
        raise _fail(where, "version", f"is {data.get('version')!r}; this veil reads version {VERSION}")
    video = data.get("video")
    if not isinstance(video, dict):
        raise _fail(where, "video", "must be an object")
    for key in ("path", "sha256"):
        if not isinstance(video.get(key), str) or not video[key]:
            raise _fail(where, f"video.{key}", "must be a non-empty string")
    for key in ("frames", "width", "height"):
        _int(video.get(key), where, f"video.{key}", least=1)
    tracks = data.get("tracks")
    if not isinstance(tracks, dict) or tracks.get("schema") != TRACK_SCHEMA or tracks.get("version") != TRACK_VERSION:
        raise _fail(where, "tracks", f"must be a {TRACK_SCHEMA} version {TRACK_VERSION} document")
    if tracks.get("columns") != list(TRACK_COLUMNS) or not isinstance(tracks.get("tracks"), list):
        raise _fail(where, "tracks.columns", f"must be {list(TRACK_COLUMNS)}")
    for i, track in enumerate(tracks["tracks"]):
        if not isinstance(track, dict) or track.get("kind") not in KINDS or not isinstance(track.get("boxes"), list):
            raise _fail(where, f"tracks.tracks[{i}]", "must have an id, a kind and boxes")
        for j, row in enumerate(track["boxes"]):
            if not isinstance(row, list) or len(row) != len(TRACK_COLUMNS):
                raise _fail(where, f"tracks.tracks[{i}].boxes[{j}]", f"must have {len(TRACK_COLUMNS)} values")
    edits = data.get("edits", [])
    if not isinstance(edits, list):
        raise _fail(where, "edits", "must be a list")
    return Review(video, tracks, [check_edit(e, f"{where}: edits[{i}]") for i, e in enumerate(edits)])


def load_review(path: str | Path) -> Review:
    """Read and check a sidecar. Raises `InputError` naming the key that is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--review: cannot read {str(path)!r}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{str(path)!r}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    return _check(data, repr(str(path)))


def save_review(path: str | Path, review: Review) -> Path:
    """Write the sidecar atomically."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        tmp.write_text(json.dumps(review.to_dict(), separators=(",", ":")) + "\n")
    except BaseException:
        discard(tmp)
        raise
    publish(tmp, path)
    return path


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, once per process for the same file (the segments of one video share it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_video(review: Review, video: Path, sidecar: Path) -> None:
    """Refuse a sidecar made for another file (by the sha256 of its bytes)."""
    stat = Path(video).stat()
    digest = _sha256(str(Path(video).resolve()), stat.st_size, stat.st_mtime_ns)
    if digest != review.video["sha256"]:
        raise InputError(f"--review {str(sidecar)!r} was made for another file ({review.video['path']}, "
                         f"sha256 {review.video['sha256'][:12]}...), not {str(video)!r} ({digest[:12]}...)")
