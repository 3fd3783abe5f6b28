"""Codec checkpoints: one torch file holding the model config, weights, training state and log.

A stream names the model it was encoded with (``model_id``) and the sha256 of the checkpoint
file; the receiver refuses a checkpoint whose hash differs, since any other weights (or another
scrambling secret) would decode the codes into the wrong picture without an error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from veil.stream.model import CodecConfig, CodecModel

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "file_sha256",
           "default_checkpoint", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "veil-codec-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a codec checkpoint."""


@dataclass
class Checkpoint:
    model: CodecModel
    step: int = 0
    optimizer: dict | None = None
    train_config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    sha256: str = ""
    path: Path | None = None

    @property
    def model_id(self) -> str:
        return self.path.stem if self.path else f"{self.model.config.kind}-unsaved"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so an interrupted save never leaves a broken file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "config": ckpt.model.config.to_dict(), "state_dict": ckpt.model.state_dict(),
            "step": ckpt.step, "optimizer": ckpt.optimizer, "train_config": ckpt.train_config,
            "history": ckpt.history}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    ckpt.path, ckpt.sha256 = path, file_sha256(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"codec checkpoint {str(path)!r} not found; train one with "
                              "`veil train codec --videos DIR --out FILE`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise CheckpointError(f"{str(path)!r} is not a readable torch checkpoint: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a veil codec checkpoint")
    model = CodecModel(CodecConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return Checkpoint(model, blob["step"], blob.get("optimizer"), blob.get("train_config", {}),
                      blob.get("history", []), file_sha256(path), path)


def default_checkpoint(kind: str) -> Path:
    """The shipped model of a kind (``f2f`` or ``v2v``), built by ``python -m veil.stream.train --default``."""
    return WEIGHTS_DIR / f"{kind}.pt"
