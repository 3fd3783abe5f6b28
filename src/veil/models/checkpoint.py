"""Checkpoint files of veil's learned models: written atomically, read without running code.

A checkpoint is a dict of plain values and tensors with a ``format`` tag. It is loaded with
``torch.load(weights_only=True)``: a checkpoint is often a file someone else made, and a full
unpickle of such a file can run arbitrary code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from veil.errors import InputError

__all__ = ["CheckpointError", "save_blob", "load_blob", "one_line_reason"]


class CheckpointError(InputError, ValueError):
    """A checkpoint that is missing, unreadable or of another kind."""


def save_blob(blob: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict to `path` through a temporary file, so no half-written file appears."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def one_line_reason(exc: BaseException) -> str:
    """Why torch (or pickle) refused a file, in one line: its messages run to a page."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text:
        return "it holds Python objects, which could run code when loaded; veil loads only tensors and plain values"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def load_blob(path: str | Path, fmt: str, what: str, hint: str) -> dict[str, Any]:
    """The checkpoint dict at `path`, checked to carry the format tag `fmt`.

    `what` names the model in messages ("QM-VAE"), `hint` says how to make one.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} checkpoint {str(path)!r} does not exist; {hint}")
    try:
        with warnings.catch_warnings():  # torch's notes on foreign pickles: the error below says it all
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad or unsafe file
        raise CheckpointError(f"{str(path)!r} is not a veil {what} checkpoint ({one_line_reason(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise CheckpointError(f"{str(path)!r} is not a veil {what} checkpoint")
    return blob
