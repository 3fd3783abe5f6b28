"""Data sets for `veil action`: HMDB51, UCF101, any ``<action>/<video>`` folder, and the synthetic set.

Every data set is a list of `VideoItem` (a file, its action, its privacy attributes) read by
`ClipDataset`, which decodes a clip with `veil.media.read.read_frames` (streaming: only the sampled frames
are kept), takes ``frames`` frames spread evenly over the video (the evaluation protocol of VideoMAE,
one clip per video), centre-crops a square and resizes it.

Official splits:
- HMDB51: ``testTrainMulti_7030_splits/<action>_test_split<k>.txt``, lines ``<video> <1|2|0>``
  (1 train, 2 test, 0 unused);
- UCF101: ``ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt``.
Privacy attributes come from the VP pickles (`labels.py`), matched on ``<action>/<stem>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from veil.action.labels import load_labels_json, load_vp_labels, video_key
from veil.action.synthetic import SyntheticSet
from veil.errors import InputError
from veil.media.files import is_media

__all__ = ["VideoItem", "Split", "ClipDataset", "sample_indices", "resize_clip", "hmdb51_split",
           "ucf101_split", "folder_split", "synthetic_batches", "read_clip", "load_vp"]



@dataclass(frozen=True)
class VideoItem:
    path: Path
    action: int
    attributes: tuple[int, ...]


@dataclass(frozen=True)
class Split:
    """Train and test items of one data set, with the names of the label columns."""

    train: list[VideoItem]
    test: list[VideoItem]
    actions: tuple[str, ...]
    attributes: tuple[str, ...]
    unlabelled: int = 0  # videos skipped because the labels file has no entry for them


def sample_indices(total: int, frames: int) -> np.ndarray:
    """``frames`` indices spread evenly over ``total`` frames (repeating when the video is short)."""
    if total < 1:
        raise InputError("video has no frames")
    return np.minimum(((np.arange(frames) + 0.5) * total / frames).astype(np.int64), total - 1)


def resize_clip(clip: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, then area resize.

    Shape:
        clip: (T, H, W, 3) uint8. Returns (T, size, size, 3) uint8.
    """
    t, h, w, _ = clip.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(clip[:, top:top + side, left:left + side])).permute(0, 3, 1, 2)
    if side != size:
        x = F.interpolate(x.float(), size=(size, size), mode="area" if side > size else "bilinear",
                          align_corners=None if side > size else False)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def read_clip(path: Path, frames: int, size: int) -> np.ndarray:
    """Decode the sampled frames of one video. Returns (frames, size, size, 3) uint8."""
    from veil.media.read import probe, read_frames  # I/O lives in veil.media.read

    total = probe(path).frame_count
    if total < 1:  # the container does not say: count by decoding
        total = sum(1 for _ in read_frames(path))
    wanted = sample_indices(total, frames)
    wanted_set = set(wanted.tolist())
    picked: dict[int, np.ndarray] = {}
    for i, image in enumerate(read_frames(path)):
        if i in wanted_set:
            picked[i] = image
        if i >= wanted[-1]:
            break
    if not picked:
        raise InputError(f"{str(path)!r}: no frame could be decoded")
    last = picked[max(picked)]
    clip = np.stack([picked.get(int(i), last) for i in wanted])
    return resize_clip(clip, size)


class ClipDataset(Dataset):
    """Items of a `Split` as ``(clip (T, S, S, 3) uint8, action, attributes (A,))`` tensors."""

    def __init__(self, items: list[VideoItem], frames: int, size: int) -> None:
        self.items, self.frames, self.size = items, frames, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        item = self.items[i]
        clip = read_clip(item.path, self.frames, self.size)
        return (torch.from_numpy(clip), torch.tensor(item.action),
                torch.tensor(item.attributes, dtype=torch.int64))


def _attributes(labels: dict[str, np.ndarray] | None, key: str) -> tuple[int, ...] | None:
    if labels is None:
        return ()
    row = labels.get(key)
    return None if row is None else tuple(int(v) for v in row)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{str(path)!r} not found: {what}")
    return path


def hmdb51_split(root: Path, fold: int = 1, labels: dict[str, np.ndarray] | None = None,
                 attribute_names: tuple[str, ...] = (), splits_dir: Path | None = None) -> Split:
    """HMDB51 (``root/<action>/<video>.avi``) with the official 70/30 split ``fold`` (1-3)."""
    splits = _need(splits_dir or root / "testTrainMulti_7030_splits",
                   "expected HMDB51's testTrainMulti_7030_splits folder (pass --splits DIR)")
    files = sorted(splits.glob(f"*_test_split{fold}.txt"))
    if not files:
        raise InputError(f"no *_test_split{fold}.txt in {str(splits)!r}")
    actions = tuple(f.name[: -len(f"_test_split{fold}.txt")] for f in files)
    train, test, unlabelled = [], [], 0
    for a, f in enumerate(files):
        for line in f.read_text().split("\n"):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("1", "2"):
                continue
            attrs = _attributes(labels, video_key(f"{actions[a]}/{parts[0]}"))
            if attrs is None:
                unlabelled += 1
                continue
            item = VideoItem(root / actions[a] / parts[0], a, attrs)
            (train if parts[1] == "1" else test).append(item)
    return Split(train, test, actions, attribute_names, unlabelled)


def ucf101_split(root: Path, fold: int = 1, labels: dict[str, np.ndarray] | None = None,
                 attribute_names: tuple[str, ...] = (), splits_dir: Path | None = None) -> Split:
    """UCF101 (``root/<Action>/v_<Action>_gXX_cYY.avi``) with the official split ``fold`` (1-3)."""
    splits = _need(splits_dir or root / "ucfTrainTestlist",
                   "expected UCF101's ucfTrainTestlist folder (pass --splits DIR)")
    class_ind = _need(splits / "classInd.txt", "UCF101 classInd.txt is missing")
    actions = tuple(line.split()[1] for line in class_ind.read_text().split("\n") if line.strip())
    index = {name: i for i, name in enumerate(actions)}
    out: dict[str, list[VideoItem]] = {"train": [], "test": []}
    unlabelled = 0
    for part in out:
        listing = _need(splits / f"{part}list0{fold}.txt", f"UCF101 {part} list of split {fold} is missing")
        for line in listing.read_text().split("\n"):
            if not line.strip():
                continue
            rel = line.split()[0]
            attrs = _attributes(labels, video_key(rel))
            if attrs is None:
                unlabelled += 1
                continue
            out[part].append(VideoItem(root / rel, index[rel.split("/")[0]], attrs))
    return Split(out["train"], out["test"], actions, attribute_names, unlabelled)


def _hash_split(rel: str, test_fraction: float = 0.2) -> str:
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "train"


def folder_split(root: Path, labels_file: Path | None = None,
                 vp_labels: dict[str, np.ndarray] | None = None, attribute_names: tuple[str, ...] = ()) -> Split:
    """Any ``root/<action>/<video>`` folder.

    With veil's ``labels.json`` (what `make-synthetic` writes) actions, attributes and splits come
    from the file; otherwise actions are the folder names, attributes come from ``vp_labels`` and the
    split is a fixed 80/20 by a hash of the path.
    """
    labels_file = labels_file or (root / "labels.json" if (root / "labels.json").is_file() else None)
    if labels_file is not None:
        doc = load_labels_json(labels_file)
        base = labels_file.parent
        actions = tuple(doc["actions"])
        index = {a: i for i, a in enumerate(actions)}
        out: dict[str, list[VideoItem]] = {"train": [], "test": []}
        for v in doc["videos"]:
            split = v.get("split") or _hash_split(v["path"])
            out[split].append(VideoItem(base / v["path"], index[v["action"]], tuple(v.get("attributes", ()))))
        return Split(out["train"], out["test"], actions, tuple(doc["attributes"]))
    actions = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not actions:
        raise InputError(f"{str(root)!r} has no <action>/ sub-folders and no labels.json")
    out = {"train": [], "test": []}
    unlabelled = 0
    for a, name in enumerate(actions):
        for f in sorted((root / name).iterdir()):
            if not is_media(f, photos=False):
                continue
            attrs = _attributes(vp_labels, video_key(f"{name}/{f.name}"))
            if attrs is None:
                unlabelled += 1
                continue
            out[_hash_split(f"{name}/{f.name}")].append(VideoItem(f, a, attrs))
    return Split(out["train"], out["test"], actions, attribute_names, unlabelled)


def synthetic_batches(data: SyntheticSet, batch_size: int, shuffle: bool,
                      seed: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One pass over an in-memory synthetic set in batches."""
    order = np.random.default_rng(seed).permutation(len(data)) if shuffle else np.arange(len(data))
    for i in range(0, len(data), batch_size):
        rows = order[i:i + batch_size]
        yield (torch.from_numpy(data.videos[rows]), torch.from_numpy(data.actions[rows]),
               torch.from_numpy(data.attributes[rows]))


def load_vp(path: Path | None) -> dict[str, np.ndarray] | None:
    return load_vp_labels(path) if path is not None else None
