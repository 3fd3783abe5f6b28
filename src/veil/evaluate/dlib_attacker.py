"""An attacker that shares nothing with veil: dlib's own face pipeline, end to end.

Fawkes' threat model (Shan et al. 2020, Sec. 3): someone collects the faces a person posted
(protected), adds clean faces of other people, trains a classifier, and then meets clean faces
of the person elsewhere (another video, a street camera). A cloak protects a clean face when the
classifier does not name the person.

This attacker uses dlib's library for every step: its HOG face detector
(``get_frontal_face_detector``, one upsampling), its 5-point shape predictor, its face chip
(``get_face_chip``, 150 px, padding 0.25) and its ResNet (``face_recognition_model_v1``), and a
1-nearest-neighbour classifier on the 128-D descriptors (dlib's same-person distance is 0.6).
Frames are read with PyAV. It runs as a script in a process of its own (``python -I``; veil
starts it from `veil.evaluate.pipelines`), so no veil code, crop, detector or network is in its
path: this file imports the standard library, NumPy, PyAV and dlib only (tests/evaluate check it).

Each source of faces is a video, a photo or a folder of photos, with an optional frame range; the person's face is the
largest one dlib finds in a frame (the footage shows one person). Other people's photos give one
identity per face. Input is one JSON object on standard input::

    {"train": [{"path": "protected.mp4", "start": 0, "stop": 36}],   # the person, as posted
     "test": [{"path": "clean.mp4", "start": 40}],                   # the person, clean, elsewhere
     "others": ["a.jpg", "b.jpg"],                                    # other people, clean
     "every": 1}                                                      # use every Nth frame

and the answer one JSON object on standard output: faces found in each set, the protection
success (the share of clean test faces whose nearest neighbour is not the person), and the
distances of the test faces to their nearest protected face of the person and to their nearest
other person.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import av
import dlib
import numpy as np

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _models() -> Path:
    """Where face-recognition-models keeps dlib's files (found without importing it: its
    ``__init__`` needs ``pkg_resources``, which new setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed")
    return Path(spec.submodule_search_locations[0]) / "models"


class Dlib:
    """dlib's detector, shape predictor, chip and network."""

    def __init__(self) -> None:
        models = _models()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def faces(self, image: np.ndarray) -> list[np.ndarray]:
        """The descriptors of every face dlib finds, largest first. image: (H, W, 3) uint8 RGB."""
        return [descriptor for _, descriptor in self.located(image)]

    def located(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(box xyxy (4,), descriptor (128,)) of every face dlib finds, largest first."""
        found = sorted(self.detector(image, 1), key=lambda r: -r.width() * r.height())
        chips = [dlib.get_face_chip(image, self.shape(image, r), 150, 0.25) for r in found]
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32),
                 np.array(self.net.compute_face_descriptor(np.ascontiguousarray(c)))) for r, c in zip(found, chips)]


def _photo(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.ascontiguousarray(next(container.decode(video=0)).to_ndarray(format="rgb24"))


def _frames(path: str, start: int = 0, stop: int | None = None, every: int = 1):
    """(index, RGB frame) of a video, a photo, or the photos of a folder in name order."""
    if Path(path).is_dir():
        photos = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        for i, photo in enumerate(photos[:stop]):
            if i >= start and (i - start) % every == 0:
                yield i, _photo(photo)
        return
    if Path(path).suffix.lower() in PHOTO_SUFFIXES:
        yield 0, _photo(Path(path))
        return
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if stop is not None and i >= stop:
                return
            if i >= start and (i - start) % every == 0:
                yield i, _upright(frame)


def _upright(frame: av.VideoFrame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    turns = int(round(float(getattr(frame, "rotation", 0) or 0) / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns) if turns else image)


def person(model: Dlib, sources: list[dict], every: int) -> np.ndarray:
    """The largest face of every frame of the sources. Shape: -> (N, 128)."""
    out = []
    for source in sources:
        for _, image in _frames(source["path"], int(source.get("start", 0)), source.get("stop"), every):
            found = model.faces(image)
            if found:
                out.append(found[0])
    return np.array(out).reshape(-1, 128)


def others(model: Dlib, photos: list[str]) -> np.ndarray:
    """One row per face of the other people's photos, each face its own identity. Shape: -> (M, 128)."""
    out = [d for photo in photos for _, image in _frames(photo) for d in model.faces(image)]
    return np.array(out).reshape(-1, 128)


def attack(train: np.ndarray, test: np.ndarray, other: np.ndarray) -> dict:
    """1-NN over the protected faces of the person and the other people, on the clean test faces."""
    answer = {"train_faces": len(train), "test_faces": len(test), "other_faces": len(other),
              "protection_success": None, "nearest_person_distance": None, "nearest_other_distance": None,
              "test_faces_within_threshold": None}
    if len(train) == 0 or len(test) == 0 or len(other) == 0:
        return answer
    to_person = np.linalg.norm(test[:, None] - train[None], axis=-1).min(axis=1)
    to_other = np.linalg.norm(test[:, None] - other[None], axis=-1).min(axis=1)
    named = to_person <= to_other  # the nearest neighbour is one of the person's protected faces
    answer.update(protection_success=round(float(1.0 - named.mean()), 5),
                  nearest_person_distance=round(float(np.median(to_person)), 4),
                  nearest_other_distance=round(float(np.median(to_other)), 4),
                  test_faces_within_threshold=round(float((to_person < 0.6).mean()), 5))
    return answer


def main() -> None:
    request = json.load(sys.stdin)
    model = Dlib()
    every = max(1, int(request.get("every", 1)))
    answer = attack(person(model, request["train"], every), person(model, request["test"], every),
                    others(model, request["others"]))
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # one line for the caller: dlib's messages repeat whole arrays
        sys.exit(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
