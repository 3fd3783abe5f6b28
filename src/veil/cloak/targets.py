"""Target identities for the cloak: a bank of other people's descriptors, and the choice of one
target per person (Fawkes, Shan et al. 2020, Sec. 4.2: the target is a real, different identity
far from the user in feature space, fixed for all of the user's images).

The bank is built from real faces: the photos that ship as veil's pinned media (several people
per photo) and, optionally, a folder of the user's own photos of other people. Every face at
least 40 pixels wide becomes one entry. The descriptors are cached under ``veil_home()``. The
photos are read by :mod:`veil.media.photo` when the bank is built (`load_bank`), the one place the
cloak reads files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from veil.errors import InputError
from veil.models.identity import IdentityModel

__all__ = ["BANK_PHOTOS", "TargetBank", "build_bank", "choose_target", "load_bank"]

BANK_PHOTOS: tuple[str, ...] = (
    "media/obama.jpg", "media/biden.jpg", "media/0-f1-su-ph.jpg", "media/0-f15-hao-ph.jpg",
    "media/15-f13-anc-ph.jpg", "media/45-m7-di-ph.jpg", "media/multi_face.jpg",
    "media/faceapi-sample1.jpg", "media/faceapi-sample2.jpg", "media/faceapi-sample3.jpg",
    "media/faceapi-sample4.jpg", "media/faceapi-sample5.jpg", "media/faceapi-sample6.jpg",
)
"""Pinned real photos whose faces form the default target bank (one entry per face)."""

_MIN_FACE_PIXELS = 40


@dataclass(frozen=True)
class TargetBank:
    """Descriptors of other people's faces.

    Shape:
        descriptors: (K, D) float32; sources: K names ("photo#face")
    """

    descriptors: np.ndarray
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.descriptors)


def build_bank(recognizer: IdentityModel, images: Sequence[tuple[str, np.ndarray]],
               detector: str = "centerface") -> TargetBank:
    """One descriptor per face (at least 40 px wide) found in the images.

    Shape:
        images: (name, (H, W, 3) uint8 RGB) pairs -> TargetBank
    """
    from veil.detect import detect

    descriptors: list[np.ndarray] = []
    sources: list[str] = []
    for name, image in images:
        faces = detect(image, detector)
        big = faces[(faces.boxes[:, 2] - faces.boxes[:, 0]) >= _MIN_FACE_PIXELS]
        if len(big) == 0:
            continue
        descriptors += list(recognizer.describe_exact(image, big.landmarks))
        sources += [f"{name}#{i}" for i in range(len(big))]
    if not descriptors:
        raise InputError("no face of at least 40 pixels found in the target photos; add photos of other people")
    return TargetBank(np.stack(descriptors), tuple(sources))


def _folder_images(folder: Path) -> list[Path]:
    from veil.media.files import describe_kinds, media_files

    if not folder.is_dir():
        raise InputError(f"target folder {str(folder)!r} does not exist or is not a folder")
    files = media_files(folder, videos=False)
    if not files:
        raise InputError(f"target folder {str(folder)!r} holds no photos ({describe_kinds(videos=False)})")
    return files


def load_bank(recognizer: IdentityModel, photos: Sequence[str] = BANK_PHOTOS, folder: str | Path | None = None,
              cache: bool = True) -> TargetBank:
    """The bank of the pinned ``photos`` plus every photo in ``folder``, cached under ``veil_home()``."""
    from veil.media.photo import read_photo
    from veil.models.store import fetch_many, veil_home

    files = _folder_images(Path(folder)) if folder is not None else []
    key = hashlib.sha256(repr((tuple(photos), [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
                               recognizer.name)).encode()).hexdigest()[:16]
    path = veil_home() / "cloak_targets" / f"{key}.npz"
    if cache and path.exists():
        data = np.load(path)
        return TargetBank(data["descriptors"], tuple(str(s) for s in data["sources"]))
    paths = fetch_many(list(photos)) if photos else {}
    images = [(name, read_photo(paths[name]).rgb) for name in photos] + [(str(f), read_photo(f).rgb) for f in files]
    bank = build_bank(recognizer, images)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, descriptors=bank.descriptors, sources=np.array(bank.sources))
        tmp.replace(path)
    return bank


def choose_target(descriptors: dict[str, np.ndarray], banks: dict[str, TargetBank],
                  thresholds: dict[str, float]) -> int:
    """The bank entry farthest from the person in every recognizer at once: the largest of the
    smallest distances in units of each recognizer's threshold. Entries any recognizer puts within
    its threshold are skipped: those are the person themself.

    Shape:
        descriptors: {name: (D,)}, banks: {name: TargetBank}, same rows in each -> index into the banks
    """
    scaled = np.stack([np.linalg.norm(banks[n].descriptors - d[None], axis=-1) / thresholds[n]
                       for n, d in descriptors.items()])
    dist = np.where((scaled < 1.0).any(axis=0), -np.inf, scaled.min(axis=0))
    if not np.isfinite(dist).any():
        raise InputError("every face in the target bank looks like the person being protected; "
                         "add photos of other people with --targets DIR")
    return int(np.argmax(dist))
