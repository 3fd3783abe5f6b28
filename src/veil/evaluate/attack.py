"""The attack protocol for cloaks (Fawkes, Shan et al. 2020, Sec. 6): does a cloak survive an
attacker who trains a face classifier on the cloaked faces?

The attacker collects the PROTECTED faces of the person (what was posted) plus clean faces of
other people, trains a classifier (k-NN or linear) on a recognizer's descriptors, and then meets
CLEAN, unseen faces of the same person (a camera in the street). The protection succeeds on a
clean face when the classifier does not name the person; protection success is the share of such
faces (Fawkes' "protection success rate").

In a video, "unseen" is at best other footage of the person (``veil evaluate --attack-clean
OTHER``, :func:`attack_elsewhere`): the attacker trains on every protected face and is tested on
the clean faces of OTHER. Without it, "unseen" is a split in time: the attacker trains on the
protected faces of the first ``train_fraction`` of the track and is tested on the clean faces of
the rest, after a gap of a tenth of the track (``gap_fraction``), so that no test face is a near
copy of a training face.

Two attackers: veil's own recognizers through veil's detector and crops (:func:`attack_track`),
and dlib's library end to end in a process of its own (:func:`dlib_library_attack`, the script
`veil/evaluate/dlib_attacker.py`), which shares no code, detector, crop or network with veil: the
judge of a cloak that never optimised against it.

The other identities are real faces that ship with veil's test media (:data:`OTHER_PEOPLE`), each
face one identity, each seen in a few views (mirror image, small shifts) so that the classifier
has more than one sample per person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from veil.models.identity import IdentityModel

__all__ = ["OTHER_PEOPLE", "AttackResult", "other_people_descriptors", "knn_predict", "linear_predict",
           "attack_track", "attack_elsewhere", "clean_descriptors", "dlib_library_attack"]

OTHER_PEOPLE = ("media/faceapi-sample1.jpg", "media/faceapi-sample2.jpg", "media/faceapi-sample3.jpg",
                "media/faceapi-sample4.jpg", "media/faceapi-sample5.jpg", "media/faceapi-sample6.jpg",
                "media/multi_face.jpg", "media/biden.jpg")
"""Photos whose faces are the attacker's "other people" (pinned in veil.models.store)."""


@dataclass(frozen=True)
class AttackResult:
    """The attack on one track with one recognizer."""

    track_id: int
    recognizer: str
    classifier: str
    train_protected_faces: int
    test_clean_faces: int
    other_identities: int
    protection_success: float | None  # share of clean test faces not named as the person

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _views(image: np.ndarray, landmarks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The face as seen a few ways: itself, mirrored, and shifted by 3% of the eye distance."""
    h, w = image.shape[:2]
    flipped = image[:, ::-1].copy()
    mirror = landmarks.copy()
    mirror[:, :, 0] = w - 1 - mirror[:, :, 0]
    mirror = mirror[:, [1, 0, 2, 4, 3]]  # left and right swap in the mirror
    eye = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=-1)[:, None, None]
    shifts = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    return [(image, landmarks), (flipped, mirror)] + [(image, landmarks + 0.03 * eye * s) for s in shifts]


def other_people_descriptors(model: IdentityModel, detector: str = "centerface",
                             photos: Sequence[str] = OTHER_PEOPLE) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of the other people (several views each) and their identity labels 0..K-1.

    Shape:
        -> descriptors (M, D), labels (M,) int
    """
    import cv2

    from veil.detect import detect
    from veil.models.store import fetch_many

    paths = fetch_many(list(photos))
    images: list[np.ndarray] = []
    landmarks: list[np.ndarray] = []
    labels: list[int] = []
    identity = 0
    for name in photos:
        image = cv2.cvtColor(cv2.imread(str(paths[name])), cv2.COLOR_BGR2RGB)
        faces = detect(image, detector)
        big = faces[(faces.boxes[:, 2] - faces.boxes[:, 0]) >= 40]  # too small faces carry no identity
        for i in range(len(big)):
            views = _views(image, big.landmarks[i:i + 1])
            images += [v[0] for v in views]
            landmarks += [v[1] for v in views]
            labels += [identity] * len(views)
            identity += 1
    if not images:
        raise RuntimeError("no face found in the attacker's photos of other people")
    return model.describe(images, landmarks), np.array(labels)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 3) -> np.ndarray:
    """k-nearest-neighbour labels (L2), ties broken by the nearer neighbour.

    Shape:
        train_x (N, D), train_y (N,), test_x (M, D) -> (M,)
    """
    d = np.linalg.norm(test_x[:, None] - train_x[None], axis=-1)
    k = min(k, len(train_x))
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    out = np.empty(len(test_x), train_y.dtype)
    for i, idx in enumerate(nearest):
        votes: dict[int, float] = {}
        for rank, j in enumerate(idx):
            votes[int(train_y[j])] = votes.get(int(train_y[j]), 0.0) + 1.0 - 1e-3 * rank
        out[i] = max(votes, key=votes.__getitem__)
    return out


def linear_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, epochs: int = 200,
                   weight_decay: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Multinomial logistic regression on standardised descriptors (full-batch L-BFGS).

    Shape:
        train_x (N, D), train_y (N,) labels, test_x (M, D) -> (M,)
    """
    classes, y = np.unique(train_y, return_inverse=True)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    t = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], len(classes), generator=gen, dtype=torch.float64) * 0.01).requires_grad_(True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    # balance the classes: the person has many more faces than each other identity
    counts = torch.bincount(t, minlength=len(classes)).double()
    weights = (len(t) / (len(classes) * counts))
    opt = torch.optim.LBFGS([w, b], max_iter=epochs, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, t, weight=weights) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        scores = torch.from_numpy((test_x - mean) / std).double() @ w + b
    return classes[scores.argmax(1).numpy()]


def attack_track(track_id: int, frames: np.ndarray, protected: np.ndarray, clean: np.ndarray,
                 others: tuple[np.ndarray, np.ndarray], recognizer: str, classifier: str = "knn",
                 train_fraction: float = 0.5, gap_fraction: float = 0.1) -> AttackResult:
    """Fawkes' protocol on one track.

    Shape:
        frames: (N,) frame index of each face of the track, protected/clean: (N, D) descriptors
        of the same faces in the protected and the original video; others: (M, D), (M,)
    """
    order = np.argsort(frames, kind="stable")
    frames, protected, clean = frames[order], protected[order], clean[order]
    span = frames[-1] - frames[0] + 1
    split = frames[0] + train_fraction * span
    train = frames < split
    test = frames >= split + gap_fraction * span
    return _fawkes(track_id, protected[train], clean[test], others, recognizer, classifier)


def attack_elsewhere(protected: np.ndarray, clean: np.ndarray, others: tuple[np.ndarray, np.ndarray],
                     recognizer: str, classifier: str = "knn") -> AttackResult:
    """Fawkes' protocol with other footage: trained on every protected face of the person, tested
    on the clean faces of another video or photos of them (track id -1: the whole video).

    Shape:
        protected: (N, D), clean: (M, D) descriptors; others: (K, D), (K,)
    """
    return _fawkes(-1, protected, clean, others, recognizer, classifier)


def _fawkes(track_id: int, train: np.ndarray, test: np.ndarray, others: tuple[np.ndarray, np.ndarray],
            recognizer: str, classifier: str) -> AttackResult:
    """The classifier trained on `train` (the person, protected) and the other people, and the
    share of `test` (the person, clean) it does not name.

    Shape:
        train: (N, D), test: (M, D); others: (K, D), (K,)
    """
    other_x, other_y = others
    n_other = int(len(np.unique(other_y)))
    if len(train) == 0 or len(test) == 0:
        return AttackResult(track_id, recognizer, classifier, len(train), len(test), n_other, None)
    person = int(other_y.max()) + 1
    x = np.concatenate([train, other_x])
    y = np.concatenate([np.full(len(train), person), other_y])
    predict = knn_predict if classifier == "knn" else linear_predict
    named = predict(x, y, test) == person
    return AttackResult(track_id, recognizer, classifier, len(train), len(test), n_other,
                        round(float(1.0 - named.mean()), 5))


def clean_descriptors(model: IdentityModel, frames: Sequence[np.ndarray], detector: str = "centerface") -> np.ndarray:
    """The descriptor of the largest face of each frame (other footage of one person).

    Shape:
        frames: (H, W, 3) uint8 RGB each -> (M, D), M <= len(frames)
    """
    from veil.detect import get_detector

    det = get_detector(detector)
    images, landmarks = [], []
    for frame in frames:
        faces = det.detect(frame)
        if len(faces):
            images.append(frame)
            landmarks.append(faces.landmarks[int(np.argmax(faces.sizes))][None])
    return model.describe(images, landmarks) if images else np.zeros((0, 0), np.float32)


ATTACKER_SCRIPT = Path(__file__).with_name("dlib_attacker.py")


def dlib_library_attack(protected: Path, original: Path, frames: int, other: Path | None = None,
                        train_fraction: float = 0.5, gap_fraction: float = 0.1, every: int = 1) -> dict:
    """Fawkes' protocol run by dlib's own library end to end (`veil.evaluate.dlib_attacker`, in a
    process of its own): trained on the faces of `protected` (its first `train_fraction` of
    `frames`, or all of them when `other` is given) and the other people's photos, tested on the
    clean faces of `other`, else of `original` after the split and a gap.

    Raises `InputError` when dlib's library is not installed.
    """
    import importlib.util
    import json
    import subprocess
    import sys

    from veil.errors import InputError
    from veil.models.store import fetch_many

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        raise InputError("--attack-pipeline dlib needs dlib's library: pip install 'veil[attack]' "
                         "(dlib-bin and face-recognition-models)")
    if other is not None:
        train = [{"path": str(protected), "stop": frames}]
        test = [{"path": str(p)} for p in _footage(other)]
    else:
        split = int(round(train_fraction * frames))
        train = [{"path": str(protected), "stop": split}]
        test = [{"path": str(original), "start": split + int(round(gap_fraction * frames)), "stop": frames}]
    request = {"train": train, "test": test, "every": every,
               "others": [str(p) for p in fetch_many(list(OTHER_PEOPLE)).values()]}
    # -I: isolated, so that nothing of veil (not even this folder) is on the attacker's path
    proc = subprocess.run([sys.executable, "-I", str(ATTACKER_SCRIPT)], input=json.dumps(request),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dlib's attacker failed: {(proc.stderr.strip().splitlines() or [''])[-1][:300]}")
    answer = json.loads(proc.stdout)
    answer["test_source"] = str(other) if other is not None else "original, after the training frames"
    return answer


def _footage(path: Path) -> list[Path]:
    """A video or photo, or the videos and photos of a folder (name order)."""
    from veil.media.files import media_files

    return media_files(path) if path.is_dir() else [path]
