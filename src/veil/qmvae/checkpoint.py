"""QM-VAE checkpoints: the model's config and weights with its training config, epoch, optimiser
state and loss history, and the shipped model (``weights/qmvae.pt``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from veil.models import checkpoint as checkpoint_io
from veil.qmvae.model import QMVAE, QMVAEConfig

__all__ = ["TrainConfig", "QMVAECheckpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "default_checkpoint", "WEIGHTS"]

FORMAT = "veil-qmvae-checkpoint/1"
WEIGHTS = Path(__file__).parent / "weights" / "qmvae.pt"
CheckpointError = checkpoint_io.CheckpointError


@dataclass
class TrainConfig:
    """Eq. 7's weights and the optimiser (the paper: Adam, 1e-3, beta 0.25, alpha 0.4)."""

    alpha: float = 0.4
    beta: float = 0.25
    epochs: int = 34
    batch_size: int = 32
    service_batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    warmup_epochs: int = 14
    """Epochs of reconstruction alone (alpha 0) before the service term joins: from scratch the
    KL term's gradient swamps the MSE's and the decoder never learns to draw a face."""
    service_lr_scale: float = 0.25
    """Learning rate after the warm-up, as a fraction of ``lr``: at the full rate the service term
    undid the reconstruction within an epoch."""
    service_decay: bool = True
    """Decay that rate linearly to zero over the service epochs: the test expression rate swung
    by 0.2-0.3 from one epoch to the next at a constant rate."""
    clip_grad: float = 1.0
    freeze_decoder: bool = True
    """Train only the encoder and codebook once the service term joins: the decoder keeps drawing
    the faces it learnt from the capped training set, the service term only chooses among them."""
    paste_mask: bool = True
    """Judge the service on the generated face pasted into the original crop under the
    protection's feathered ellipse (what the protected frame shows), not on the bare face."""
    ssim_weight: float = 0.0
    """Weight of 1 - SSIM (``pytorch_msssim``, 7-px Gaussian window) between the drawn face and the
    original, added to the MSE in every epoch: the MSE alone is met by a blurred average face; SSIM
    asks for the original's local structure (edges of mouth, eyes, brows)."""
    geometry_weight: float = 0.0
    """Weight of the expression-geometry term once the service term joins: the mean absolute change
    of the pasted face's mouth opening and width, eyebrow height and eye opening against the
    original's, in eye distances (:class:`veil.qmvae.service.ExpressionGeometry`), so the drawn face
    carries the expression in its shape, not only in what a classifier reads."""


@dataclass
class QMVAECheckpoint:
    model: QMVAE
    train_config: TrainConfig = field(default_factory=TrainConfig)
    epoch: int = 0
    optimizer: dict | None = None
    history: list[dict] = field(default_factory=list)


def default_checkpoint() -> Path:
    return WEIGHTS


def save_checkpoint(ckpt: QMVAECheckpoint, path: str | Path, keep_optimizer: bool = True) -> Path:
    """Write atomically (temp file + rename): an interrupted run never leaves a broken file."""
    blob = {"format": FORMAT, "config": ckpt.model.config.to_dict(), "inputs": list(ckpt.model.config.inputs),
            "state_dict": ckpt.model.state_dict(), "train_config": asdict(ckpt.train_config),
            "epoch": ckpt.epoch, "optimizer": ckpt.optimizer if keep_optimizer else None,
            "history": ckpt.history}
    return checkpoint_io.save_blob(blob, path)


def load_checkpoint(path: str | Path) -> QMVAECheckpoint:
    blob = checkpoint_io.load_blob(path, FORMAT, "QM-VAE", "train one with `veil train qmvae --faces DIR -o FILE` "
                                   "(or `veil train qmvae --default`)")
    model = QMVAE(QMVAEConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return QMVAECheckpoint(model, TrainConfig(**blob["train_config"]), blob["epoch"], blob.get("optimizer"),
                           blob.get("history", []))
