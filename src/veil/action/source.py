"""One object that hands batches of any data set to training and evaluation.

`open_source` turns the command-line description of a data set (kind, path, labels, split) into a
`DataSource`: two callables that each yield one epoch of ``(clips uint8, actions, attributes)``
batches, plus the label names. The synthetic set lives in memory; the others decode their files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import DataLoader

from veil.action.data import ClipDataset, Split, folder_split, hmdb51_split, load_vp, synthetic_batches, ucf101_split
from veil.action.labels import VP_ATTRIBUTES, shipped_labels
from veil.action.synthetic import ACTIONS, ATTRIBUTES, make_synthetic
from veil.errors import InputError

__all__ = ["DataSource", "open_source", "KINDS"]

KINDS = ("synthetic", "folder", "hmdb51", "ucf101")
Batch = tuple[Tensor, Tensor, Tensor]


@dataclass
class DataSource:
    train: Callable[[], Iterable[Batch]]  # shuffled, a new order every call
    test: Callable[[], Iterable[Batch]]
    train_size: int
    test_size: int
    actions: tuple[str, ...]
    attributes: tuple[str, ...]
    unlabelled: int = 0


def _loader(items: ClipDataset, batch_size: int, shuffle: bool, workers: int) -> Callable[[], Iterator[Batch]]:
    def epoch() -> Iterator[Batch]:
        yield from DataLoader(items, batch_size=batch_size, shuffle=shuffle, num_workers=workers)
    return epoch


def _vp_file(kind: str, labels: Path | None) -> Path | None:
    return labels if labels is not None else shipped_labels(kind)


def open_source(kind: str, path: Path | None, *, frames: int, size: int, batch_size: int,
                privacy_labels: Path | None = None, attribute_names: tuple[str, ...] = (),
                fold: int = 1, splits: Path | None = None, synthetic_count: int = 2000,
                seed: int = 0, workers: int = 0) -> DataSource:
    """Open a data set for training/evaluation at the model's clip shape."""
    if kind not in KINDS:
        raise InputError(f"unknown data set kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "synthetic":
        train = make_synthetic(synthetic_count, frames, size, seed=seed + 1)
        test = make_synthetic(max(60, synthetic_count // 5), frames, size, seed=seed + 10_000)
        epoch = iter(range(1, 1 << 30))
        return DataSource(lambda: synthetic_batches(train, batch_size, True, seed + next(epoch)),
                          lambda: synthetic_batches(test, batch_size, False),
                          len(train), len(test), ACTIONS, ATTRIBUTES)
    if path is None or not path.is_dir():
        raise InputError(f"data folder {str(path)!r} does not exist; pass the root of the {kind} videos")
    vp_file = _vp_file(kind, privacy_labels)
    vp = load_vp(vp_file)
    names = attribute_names
    if vp is not None and not names:
        width = len(next(iter(vp.values())))
        names = VP_ATTRIBUTES if width == len(VP_ATTRIBUTES) else tuple(f"attribute_{i}" for i in range(width))
    split: Split
    if kind == "hmdb51":
        split = hmdb51_split(path, fold, vp, names, splits)
    elif kind == "ucf101":
        split = ucf101_split(path, fold, vp, names, splits)
    else:
        split = folder_split(path, None, vp, names)
    if not split.train or not split.test:
        raise InputError(f"{str(path)!r}: {len(split.train)} training and {len(split.test)} test videos "
                         "with labels; both splits need videos")
    return DataSource(_loader(ClipDataset(split.train, frames, size), batch_size, True, workers),
                      _loader(ClipDataset(split.test, frames, size), batch_size, False, workers),
                      len(split.train), len(split.test), split.actions, split.attributes, split.unlabelled)
