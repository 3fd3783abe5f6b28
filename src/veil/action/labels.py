"""Privacy-attribute labels: the VP-HMDB51 / VP-UCF101 pickles and veil's own JSON labels file.

A pickle runs code when loaded (``__reduce__`` can name any callable), and labels files come from
users. `load_vp_labels` therefore uses an unpickler that resolves only the three globals numpy needs to
rebuild an array (``_reconstruct``, ``ndarray``, ``dtype``) and refuses everything else *before* it
is called, then checks that the result is a dict of small integer arrays.

The VP files hold five binary attributes per video; the column order is not written in them, so the
names are configurable (`VP_ATTRIBUTES` is the order of the paper's description).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from veil.errors import InputError
from veil.models.checkpoint import one_line_reason

__all__ = ["UnsafeLabelsError", "VP_ATTRIBUTES", "SHIPPED_LABELS", "shipped_labels", "load_vp_labels", "video_key",
           "load_labels_json", "write_labels_json"]

VP_ATTRIBUTES = ("face", "skin_color", "gender", "nudity", "relationship")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class UnsafeLabelsError(InputError):
    """A labels pickle names something other than numpy arrays: it could run code, so it is refused."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise UnsafeLabelsError(
                f"labels pickle refers to {module}.{name}, which is not a numpy array type; refusing to "
                "load it because unpickling it could run code. Use the VP-HMDB51/VP-UCF101 files as "
                "published, or a JSON labels file"
            )
        return getattr(__import__(target[0], fromlist=[target[1]]), target[1])


SHIPPED_LABELS = Path(__file__).parent / "vp_labels"
"""The published VP labels of HMDB51 and UCF101, shipped with veil as CSV (see its README)."""


def shipped_labels(kind: str) -> Path | None:
    """The shipped VP labels of a data set (``hmdb51``, ``ucf101``), None for another."""
    path = SHIPPED_LABELS / f"{kind}.csv.gz"
    return path if path.is_file() else None


def video_key(path: str | PurePosixPath) -> str:
    """``"<action>/<stem>"``: the labels use .mp4 names, the data sets ship .avi files."""
    p = PurePosixPath(str(path).replace("\\", "/"))
    return f"{p.parent.name}/{p.stem}"


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """A labels CSV (``video,a1,...``; gzipped when it ends in .gz) as video -> integer array."""
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
            rows = list(csv.reader(f))
        return {row[0]: np.array([int(v) for v in row[1:]]) for row in rows[1:] if row}
    except (OSError, ValueError, EOFError, IndexError) as exc:
        raise InputError(f"{str(path)!r} is not a readable labels CSV ({exc})") from exc


def load_vp_labels(path: str | Path) -> dict[str, np.ndarray]:
    """Load VP privacy labels: the published pickle (safely: numpy arrays only) or veil's CSV.

    Returns ``{"<action>/<stem>": (A,) int64 array in {0, 1}}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"privacy labels {str(path)!r} not found; pass --privacy-labels PATH")
    if path.name.endswith((".csv", ".csv.gz")):
        data: Any = _read_csv(path)
    else:
        try:
            data = _ArraysOnly(io.BytesIO(path.read_bytes())).load()
        except UnsafeLabelsError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files
            raise InputError(f"{str(path)!r} is not a readable labels pickle ({one_line_reason(exc)})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{str(path)!r} should hold a non-empty dict of video -> attribute array")
    labels: dict[str, np.ndarray] = {}
    width = None
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "iub":
            raise InputError(f"{str(path)!r}: entry {key!r} is not a video name with an integer array")
        row = value.reshape(-1).astype(np.int64)
        width = width or len(row)
        if len(row) != width or not np.isin(row, (0, 1)).all():
            raise InputError(f"{str(path)!r}: entry {key!r} is not {width} binary attributes")
        labels[video_key(key)] = row
    return labels


def load_labels_json(path: str | Path) -> dict[str, Any]:
    """veil's labels file: ``{"actions": [...], "attributes": [...], "videos": [{"path", "action",
    "attributes", "split"}]}`` with paths relative to the file's folder."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read labels file {str(path)!r}: {exc}") from exc
    for field in ("actions", "attributes", "videos"):
        if field not in doc:
            raise InputError(f"labels file {str(path)!r} has no {field!r} field")
    return doc


def write_labels_json(path: str | Path, actions: list[str], attributes: list[str],
                      videos: list[dict[str, Any]]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"actions": actions, "attributes": attributes, "videos": videos}, indent=1))
    tmp.replace(path)
    return path
