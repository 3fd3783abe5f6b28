"""Faces left as they are on purpose: `veil protect --keep-face me.jpg` hides everyone but the
people of the given photos (the person filming, a presenter).

Each photo must show exactly one face; its dlib descriptor (the recognizer registry's ``dlib``,
:func:`veil.models.identity.get_recognizer`, on the aligned crop) is the reference. A detected face
matches when its descriptor is within `KEEP_DISTANCE` of a reference.

In a video the decision is made per track, with the tracker's look-ahead: a face is left as it
is on a frame only when the track's detection at or before that frame is the second (or later)
matching detection in a row, and the track's next detection, at or after the frame, matches too.
So the frames the tracker fills in between two matching detections stay as they are, and
everything else is protected: a new track until it has matched twice, the frames after a
detection that does not match, a track's last frames after its last detection (the tracker may
have drifted onto someone else), and every face when the recognizer fails. Mistakes fall on the
known person (a protected frame now and then), never on a bystander. A photo has one detection:
one match is enough there.

`KEEP_DISTANCE` is stricter than dlib's same-person threshold (0.6): on the store's photos,
Obama against Obama is 0.35-0.46 and Obama against Biden 0.74-0.86. `--keep-distance` may not go
beyond that threshold (`MAX_KEEP_DISTANCE`): there dlib itself says "another person".
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from veil.errors import InputError
from veil.faces import Faces

__all__ = ["KEEP_DISTANCE", "MAX_KEEP_DISTANCE", "KnownFaces", "KeptTracks", "known_faces"]

KEEP_DISTANCE = 0.5
MAX_KEEP_DISTANCE = 0.6
STREAK = 2  # matching detections in a row before a track's face is left as it is

Describe = Callable[[np.ndarray, np.ndarray], np.ndarray]  # image (H, W, 3), landmarks (N, 5, 2) -> (N, 128)


class KnownFaces:
    """The people whose faces stay visible.

    Args:
        references: (K, 128) dlib descriptors of the people to keep.
        describe: (H, W, 3) uint8 RGB image and (N, 5, 2) landmarks -> (N, 128) descriptors.
        distance: largest descriptor distance that counts as a match.
    """

    def __init__(self, references: np.ndarray, describe: Describe, distance: float = KEEP_DISTANCE) -> None:
        self.references = np.asarray(references, np.float32).reshape(-1, 128)
        self.describe = describe
        self.distance = distance

    def matches(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Whether each face of `image` ((H, W, 3) uint8 RGB) is one of the people. (N,) bool

        Fails closed: where the recognizer raises, no face matches.
        """
        found = self.recognised(image, faces)
        return np.zeros(len(faces), bool) if found is None else found

    def recognised(self, image: np.ndarray, faces: Faces) -> np.ndarray | None:
        """`matches`, or None where the recognizer raised."""
        if len(faces) == 0:
            return np.zeros(0, bool)
        try:
            found = np.asarray(self.describe(image, faces.landmarks), np.float32)
        except Exception:  # noqa: BLE001 - an unrecognised face is protected, whatever the reason
            return None
        gaps = np.linalg.norm(found[:, None, :] - self.references[None, :, :], axis=-1)
        return gaps.min(axis=1) < self.distance

    def tracks(self) -> KeptTracks:
        """A fresh per-video record of which tracks are these people."""
        return KeptTracks(self)


class KeptTracks:
    """Which tracked faces of one video stay unprotected (see the module docstring).

    `observe` each detected frame (with the track ids the tracker gave its faces) before the
    frames the tracker releases are asked about with `left_as_is`, in frame order.
    """

    def __init__(self, known: KnownFaces) -> None:
        self.known = known
        # Per track: frame indices of its detections and the matching streak at each.
        self._frames: dict[int, list[int]] = {}
        self._streaks: dict[int, list[int]] = {}
        self.failures = 0  # detected frames whose faces the recognizer could not describe

    def observe(self, index: int, image: np.ndarray, faces: Faces, track_ids: np.ndarray) -> None:
        """Record the detections `faces` of frame `index` and the tracks they were given."""
        found = self.known.recognised(image, faces)
        if found is None:  # none of them matches: their tracks' streaks start again
            self.failures += 1
            found = np.zeros(len(faces), bool)
        for track, match in zip(track_ids.tolist(), found):
            frames = self._frames.setdefault(track, [])
            streaks = self._streaks.setdefault(track, [])
            streaks.append(streaks[-1] + 1 if match and streaks else int(match))
            frames.append(index)

    def left_as_is(self, index: int, faces: Faces) -> np.ndarray:
        """Which of the tracked faces of frame `index` stay as they are. (N,) bool"""
        keep = np.zeros(len(faces), bool)
        for i, track in enumerate(faces.track_ids.tolist()):
            frames = self._frames.get(track)
            if not frames:
                continue
            after = bisect.bisect_left(frames, index)  # first detection at or after the frame
            before = after if after < len(frames) and frames[after] == index else after - 1
            if before < 0 or after >= len(frames):
                continue
            streaks = self._streaks[track]
            keep[i] = streaks[before] >= STREAK and streaks[after] >= 1
            # Frames are asked about in order: what lies before `before` is not needed again.
            if before > 0:
                del frames[:before], streaks[:before]
        return keep


def _reference(path: Path, detector, describe: Describe) -> np.ndarray:
    from veil.media.photo import read_photo

    if not path.is_file():
        raise InputError(f"--keep-face: {str(path)!r} is not a file")
    rgb = read_photo(path).rgb
    faces = detector.detect(rgb)
    if len(faces) != 1:
        raise InputError(f"--keep-face: {str(path)!r} must show exactly one face; {len(faces)} found")
    return describe(rgb, faces.landmarks)[0]


@lru_cache(maxsize=4)
def _known(paths: tuple[str, ...]) -> tuple[np.ndarray, Describe]:
    from veil.detect import get_detector
    from veil.models.identity import get_recognizer

    dlib = get_recognizer("dlib")

    def describe(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return dlib.describe([image], [landmarks])

    detector = get_detector("centerface")
    return np.stack([_reference(Path(p), detector, describe) for p in paths]), describe


def known_faces(paths: Sequence[str | Path], distance: float = KEEP_DISTANCE) -> KnownFaces | None:
    """The `KnownFaces` of reference photos (None when there are none); the recognizer and the
    references are built once per process and list of photos.

    Raises `InputError` when a photo is missing, unreadable, or does not show exactly one face.
    """
    if not paths:
        return None
    references, describe = _known(tuple(str(Path(p).resolve()) for p in paths))
    return KnownFaces(references, describe, distance)
