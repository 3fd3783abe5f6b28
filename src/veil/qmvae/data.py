"""QM-VAE's data: aligned face crops from photos, videos or CelebA, split 80/20, de-identified k ways.

Sources are found in a folder (or given as files): images (``.jpg .png ...``), videos (``.mp4 ...``),
or the CelebA layout (``img_align_celeba/`` and ``list_eval_partition.txt``). Faces are found by
veil's detector and aligned to the QM-VAE crop with their five landmarks.

The 80/20 split (as the paper) is made per source and never splits near-duplicates: the last 20%
of a video's frames are held out as one contiguous block, every fifth photo is held out whole,
and CelebA's images are split in the order of ``list_eval_partition.txt`` (its train images
first).

The de-identifications the model takes as input are in :mod:`veil.qmvae.deidentify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Iterator

import cv2
import numpy as np

from veil.align import CropSpec, crop_faces
from veil.errors import InputError
from veil.media.files import describe_kinds, is_photo, media_files
from veil.media.photo import read_photo
from veil.media.read import read_frames

__all__ = ["FaceSet", "find_sources", "load_faces", "augment", "balance",
           "default_sources", "lfw_subset"]

TEST_FRACTION = 0.2
TRAIN_DETECT_SIZE = 640
"""Longest side the detector sees the training media at: the size the shipped model's faces were
found at (``veil protect`` has since looked at video whole, 1920, which finds a few faces more and
would make ``veil train qmvae --default`` train on other data)."""
DEFAULT_MEDIA = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "obama.jpg", "obama2.jpg", "obama3.jpg",
                 "biden.jpg", "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
                 "multi_face.jpg", *(f"faceapi-sample{i}.jpg" for i in range(1, 7)))
"""The real face media of veil's store that the default model is trained and judged on."""
LFW_SUBSET_SHA256 = "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c"
"""scikit-image's ``data/lfw_subset.npy`` (200 x 25 x 25 grey levels in 0..1: 100 faces of
Labeled Faces in the Wild, then 100 non-faces), as scikit-image 0.26 ships it."""
LFW_ENLARGE = 4
"""How much :func:`lfw_subset` enlarges its 25-pixel faces: at 100 pixels (in a 200-pixel image)
veil's detector finds 88 of the 100 and their five landmarks."""


@dataclass
class FaceSet:
    """Aligned face crops and where they came from.

    ``service_crops`` are the same faces aligned to a service's own crop, cut from the full-size
    frame: the service's result on them is what an evaluation of the protected frame compares
    against, so training aims at it too.

    Shape:
        crops: (N, S, S, 3) uint8 RGB; landmarks: (N, 5, 2) in the source frame;
        frame_index: (N,) int; test: (N,) bool; sources: list of N paths;
        service_crops: (N, S', S', 3) uint8 RGB or None
    """

    crops: np.ndarray
    landmarks: np.ndarray
    frame_index: np.ndarray
    test: np.ndarray
    sources: list[str]
    service_crops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, keep: np.ndarray) -> "FaceSet":
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
        return FaceSet(self.crops[idx], self.landmarks[idx], self.frame_index[idx], self.test[idx],
                       [self.sources[i] for i in idx],
                       None if self.service_crops is None else self.service_crops[idx])


def augment(crops: np.ndarray, rng: np.random.Generator, jitter: float = 0.04, copies: int = 1,
            colour: float = 0.0) -> np.ndarray:
    """Mirror images and ``copies`` jittered versions of each crop: a small random similarity
    (shift, scale, rotation), mirrored half the time, and with ``colour`` > 0 a random gain,
    contrast and saturation change of up to that fraction (lighting and camera differences).
    None of these changes a face's expression, so augmented faces keep their service target.

    Shape:
        crops: (N, S, S, 3) uint8 -> ((2 + copies) N, S, S, 3): originals, mirrored, then each
        round of jittered copies (row j * N + i comes from crop i)
    """
    size = crops.shape[1]
    rounds = []
    for _ in range(copies):
        jittered = np.empty_like(crops)
        for i, crop in enumerate(crops):
            angle = rng.uniform(-6, 6)
            scale = 1 + rng.uniform(-jitter, jitter)
            m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
            m[:, 2] += rng.uniform(-jitter, jitter, 2) * size
            out = cv2.warpAffine(crop, m, (size, size), borderMode=cv2.BORDER_REFLECT)
            if rng.random() < 0.5:
                out = out[:, ::-1]
            if colour > 0:
                img = out.astype(np.float32)
                grey = img.mean(axis=-1, keepdims=True)
                img = grey + (img - grey) * (1 + rng.uniform(-colour, colour))        # saturation
                img = img.mean() + (img - img.mean()) * (1 + rng.uniform(-colour, colour))  # contrast
                img = img * (1 + rng.uniform(-colour, colour)) * (1 + rng.uniform(-colour, colour, 3) / 4)
                out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            jittered[i] = out
        rounds.append(jittered)
    return np.concatenate([crops, crops[:, :, ::-1], *rounds])


def balance(faces: FaceSet, cap: int | None) -> FaceSet:
    """At most ``cap`` faces per source, evenly spaced over it (all of them with ``cap`` None).

    A video gives hundreds of frames of one person, a photo one face: uncapped, the decoder learns
    the video's person as *the* face and draws them for everyone, held-out frames of that person
    included, where a recognizer then finds them again. Capping each source keeps the people
    of the training set near equal in weight.
    """
    if cap is None:
        return faces
    if cap < 1:
        raise ValueError(f"cap must be >= 1 face per source, got {cap}")
    keep = []
    for source in dict.fromkeys(faces.sources):
        idx = np.flatnonzero(np.asarray(faces.sources) == source)
        keep += idx[np.unique(np.linspace(0, len(idx) - 1, min(cap, len(idx))).round().astype(int))].tolist()
    return faces.subset(np.asarray(sorted(keep), dtype=int))


def default_sources() -> list[Path]:
    """The store's real photos and videos (fetched on first use)."""
    from veil.models.store import fetch

    return [fetch(f"media/{name}") for name in DEFAULT_MEDIA]


def lfw_subset(folder: Path | None = None) -> list[Path]:
    """The 100 LFW faces scikit-image ships, as photos for training: extra identities at low resolution.

    The faces are 25x25 grey crops with no landmarks; each is enlarged :data:`LFW_ENLARGE` times
    (bicubic) and set in a border of its own edge pixels, so that the detector aligns it like any
    photo. Written once into ``folder`` (default: the cache's ``files/lfw_subset``); the source
    file is checked against :data:`LFW_SUBSET_SHA256`.
    """
    import hashlib

    import skimage

    from veil.models.store import StoreError, veil_home

    folder = Path(folder) if folder is not None else veil_home() / "files" / "lfw_subset"
    paths = [folder / f"lfw{i:03d}.png" for i in range(100)]
    if all(p.is_file() for p in paths):
        return paths
    source = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"
    if not source.is_file() or hashlib.sha256(source.read_bytes()).hexdigest() != LFW_SUBSET_SHA256:
        raise StoreError(f"{source} is missing or not the file veil pins (scikit-image {skimage.__version__}); "
                         "reinstall scikit-image>=0.24")
    faces = np.load(source)[:100]
    folder.mkdir(parents=True, exist_ok=True)
    for path, face in zip(paths, faces):
        grey = np.clip(np.rint(face * 255), 0, 255).astype(np.uint8)
        big = cv2.resize(grey, None, fx=LFW_ENLARGE, fy=LFW_ENLARGE, interpolation=cv2.INTER_CUBIC)
        pad = big.shape[0] // 2
        image = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        tmp = path.with_suffix(".tmp.png")
        cv2.imwrite(str(tmp), image)
        tmp.replace(path)
    return paths


def find_sources(path: Path) -> list[Path]:
    """Media files under ``path`` (a file, a folder, or a CelebA root) in a stable order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"--faces {str(path)!r} does not exist; give a folder of face images or videos, "
                         "or a CelebA root (img_align_celeba/ + list_eval_partition.txt)")
    found = media_files(path, recursive=True)
    if not found:
        raise InputError(f"no photos or videos ({describe_kinds()}) under {str(path)!r}")
    return found


def _celeba_files(root: Path, max_images: int | None) -> list[Path] | None:
    partition = root / "list_eval_partition.txt"
    images = root / "img_align_celeba"
    if not (partition.is_file() and images.is_dir()):
        return None
    rows = [line.split() for line in partition.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: int(r[1]) if len(r) > 1 else 0)  # train (0) first, then val (1), test (2)
    files = [images / r[0] for r in rows if (images / r[0]).is_file()]
    if not files:
        raise InputError(f"{str(partition)!r} names no file present in {str(images)!r}")
    return files[:max_images] if max_images else files


def _frames(path: Path, stride: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
    if is_photo(path):
        yield 0, read_photo(path).rgb
        return

    for i, frame in enumerate(read_frames(path)):
        if max_frames is not None and i >= max_frames:
            return
        if i % stride == 0:
            yield i, frame


def load_faces(sources: list[Path] | Path, spec: CropSpec, *, stride: int = 1, max_frames: int | None = None,
               max_images: int | None = None, min_face: float = 32.0, detector: str = "centerface",
               service_spec: CropSpec | None = None, train_only: Collection[Path] = (),
               log: Callable[[str], None] = print) -> FaceSet:
    """Detect, align and split the faces of the sources (see the module docstring for the split).

    With ``service_spec`` each face is also cropped that way from the frame (``service_crops``).
    Faces of the ``train_only`` sources are never held out (nor do they shift which of the other
    photos are).
    """
    from veil.detect import get_detector

    celeba = _celeba_files(Path(sources), max_images) if isinstance(sources, (str, Path)) else None
    files = celeba if celeba is not None else (
        find_sources(Path(sources)) if isinstance(sources, (str, Path)) else [Path(s) for s in sources])
    det = get_detector(detector, detect_size=TRAIN_DETECT_SIZE)
    crops, marks, index, test, names, service = [], [], [], [], [], []
    photo_count, train_only = 0, {Path(p) for p in train_only}
    for k, path in enumerate(files):
        is_video = not is_photo(path)
        found = [(i, frame, det.detect(frame)) for i, frame in _frames(path, stride, max_frames)]
        if path in train_only:
            held = [False] * len(found)
        elif is_video:
            cut = int(round(len(found) * (1 - TEST_FRACTION)))
            held = [j >= cut for j in range(len(found))]
        elif celeba is not None:
            held = [k >= int(round(len(files) * (1 - TEST_FRACTION)))]
        else:
            held = [photo_count % 5 == 4]
            photo_count += 1
        for (i, frame, faces), hold in zip(found, held):
            keep = faces.sizes >= min_face
            if not keep.any():
                continue
            lm = faces.landmarks[keep]
            crops.append(crop_faces(frame, lm, spec))
            if service_spec is not None:
                service.append(crop_faces(frame, lm, service_spec))
            marks.append(lm)
            index += [i] * len(lm)
            test += [hold] * len(lm)
            names += [str(path)] * len(lm)
        if not celeba or k % 500 == 0:
            log(f"faces: {path.name}: {len(names)} faces so far")
    if not names:
        raise InputError(f"no face of at least {min_face:.0f} px was found in the given media")
    return FaceSet(np.concatenate(crops), np.concatenate(marks), np.asarray(index), np.asarray(test), names,
                   np.concatenate(service) if service else None)
