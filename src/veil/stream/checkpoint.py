"""Codec checkpoints: one torch file holding the model config, weights, the entropy coder's learned
prior (`veil.stream.entropy.learn_prior`), training state and log.

A stream names the model it was encoded with (``model_id``) and the sha256 of the checkpoint
file; the receiver refuses a checkpoint whose hash differs, since any other weights (or another
scrambling secret) would decode the codes into the wrong picture without an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from veil.models import checkpoint as checkpoint_io
from veil.models.store import sha256_file
from veil.stream.model import CodecConfig, CodecModel

__all__ = ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "default_checkpoint", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT = "veil-codec-checkpoint/2"  # 2: the /8 model (`CodecConfig.widths`); 1 was /4


CheckpointError = checkpoint_io.CheckpointError


@dataclass
class Checkpoint:
    model: CodecModel
    step: int = 0
    optimizer: dict | None = None
    train_config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    coder_prior: dict[str, np.ndarray] | None = None  # start counts of the entropy coder's models
    sha256: str = ""
    path: Path | None = None

    @property
    def model_id(self) -> str:
        return self.path.stem if self.path else f"{self.model.config.kind}-unsaved"


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so an interrupted save never leaves a broken file."""
    blob = {"format": FORMAT, "config": ckpt.model.config.to_dict(), "state_dict": ckpt.model.state_dict(),
            "step": ckpt.step, "optimizer": ckpt.optimizer, "train_config": ckpt.train_config,
            "history": ckpt.history,
            "coder_prior": {k: torch.from_numpy(v) for k, v in ckpt.coder_prior.items()} if ckpt.coder_prior else None}
    path = checkpoint_io.save_blob(blob, path)
    ckpt.path, ckpt.sha256 = path, sha256_file(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    blob = checkpoint_io.load_blob(path, FORMAT, "codec", "train one with `veil train codec --videos DIR --out FILE`")
    model = CodecModel(CodecConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    prior = blob.get("coder_prior")
    return Checkpoint(model, blob["step"], blob.get("optimizer"), blob.get("train_config", {}),
                      blob.get("history", []), {k: v.numpy() for k, v in prior.items()} if prior else None,
                      sha256_file(path), path)


def default_checkpoint(kind: str) -> Path:
    """The shipped model of a kind (``f2f`` or ``v2v``), built by ``python -m veil.stream.train --default``."""
    return WEIGHTS_DIR / f"{kind}.pt"
