"""Train QM-VAE (Eq. 7) on aligned face crops; checkpoints hold the config, inputs list and history.

The shipped model is trained on the store's real photos and videos by::

    veil train qmvae --default        # about 6 min on 2 CPU cores

which writes ``src/veil/qmvae/weights/qmvae.pt``; ``veil train qmvae --faces DIR -o model.pt`` trains
on your own media (photos, videos or the CelebA layout). Training is resumable: rerun the same
command with ``--resume`` and it continues from the checkpoint's epoch.

The recipe, and why: 96-pixel crops; every video frame, but at most 24 training faces per source
(one long video of one person otherwise becomes the face the decoder draws, and dlib re-identifies
her held-out frames); mirrored and jittered copies; 14 epochs of reconstruction alone (longer, and
the decoder draws the people of the training videos well enough to be re-identified); then Eq. 7
with the service judged on the generated face pasted into the frame's crop (as the protection
shows it) against the classifiers' result on the full-resolution face, training only the encoder
and codebook at a decaying rate, so that the decoder's faces stay the unidentifiable ones. The
service is all three of veil's expression classifiers (face-api's, Human's, fer's; their KL
divergences averaged). Beside the MSE, 1 - SSIM (weight 0.2) asks for the face's local structure
from the start; once the service joins, the pasted face's expression geometry (face-api's 68
landmarks, weight 1.0) is held to the original's. Each of these was measured against the recipe
without it by bench/qmvae_table.py: SSIM and geometry halved the forward pass's loss of face-api's
expression (78% to 36% of the held-out faces); the three classifiers and 96 pixels instead of
face-api's alone at 64 brought the loss by Human's classifier, searched for all three, from 52%
to 23%. The 100 LFW faces of scikit-image (``--lfw``) are not in the recipe: with them the model
reconstructs faces it never saw well enough that dlib's own library re-identified 33% of the
held-out faces drawn by the forward pass, and 11% searched.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch

from veil.errors import InputError
from veil.qmvae.checkpoint import QMVAECheckpoint, TrainConfig, load_checkpoint, save_checkpoint
from veil.qmvae.data import FaceSet, augment, balance, load_faces
from veil.qmvae.deidentify import deidentify_batch
from veil.qmvae.model import QMVAE, ExpressionService, QMVAEConfig, Service, composite, qmvae_loss, service_loss_rate
from veil.qmvae.paste import soft_ellipse

__all__ = ["prepare", "evaluate_split", "train", "run"]

@dataclass
class Prepared:
    """Tensors for training. Shape: x (N, 3k, S, S), target (N, 3, S, S) in 0..1; logits (N, C) or
    (N, M, C); geometry (N, 4): the originals' expression geometry, where training holds to it."""

    x: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor | None
    geometry: torch.Tensor | None = None


def paste_mask(config: QMVAEConfig) -> torch.Tensor:
    """The feathered ellipse ``veil protect --method qmvae`` pastes the face under, by default.

    Shape:
        -> (S, S) float32 in 0..1
    """
    return torch.from_numpy(soft_ellipse(config.size))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def prepare(crops: np.ndarray, config: QMVAEConfig, service: Service | None, seed: int,
            batch: int = 64, logits: torch.Tensor | None = None, geometry: Callable | None = None) -> Prepared:
    """De-identify the crops and run the service on the originals once (its target never changes).

    ``logits``: the service's target for each crop if already known (e.g. measured on the
    full-resolution face by :func:`service_targets`); otherwise it is run on the crops.
    ``geometry``: an :class:`~veil.qmvae.service.ExpressionGeometry`, measured on the crops.
    """
    x = _to_tensor(deidentify_batch(crops, config.inputs, config.crop, np.random.default_rng(seed)))
    target = _to_tensor(crops)
    if logits is None and service is not None:
        with torch.no_grad():
            logits = torch.cat([service(target[i:i + batch]) for i in range(0, len(target), batch)])
    if logits is not None and len(logits) != len(target):
        raise ValueError(f"{len(logits)} service targets for {len(target)} crops")
    shape = None
    if geometry is not None:
        with torch.no_grad():
            shape = torch.cat([geometry(target[i:i + batch]) for i in range(0, len(target), batch)])
    return Prepared(x, target, logits, shape)


def service_targets(faces: FaceSet, service: Service | None, batch: int = 64) -> torch.Tensor | None:
    """The service's logits on the faces as cut from the full-size frame, if it and they allow.

    Shape:
        -> (N, C) or None
    """
    if faces.service_crops is None or not hasattr(service, "on_own_crop"):
        return None
    crops = _to_tensor(faces.service_crops)
    with torch.no_grad():
        return torch.cat([service.on_own_crop(crops[i:i + batch]) for i in range(0, len(crops), batch)])


def evaluate_split(model: QMVAE, data: Prepared, service: Service | None, tc: TrainConfig,
                   batch: int = 64, geometry: Callable | None = None) -> dict[str, float]:
    """Mean loss terms and the 0/1 service loss rate (Eq. 8) on a split, in eval mode; with
    ``geometry`` and the split's geometry, the mean absolute geometry change too."""
    model.eval()
    mask = paste_mask(model.config) if tc.paste_mask else None
    sums: dict[str, float] = {}
    generated = []
    with torch.no_grad():
        for i in range(0, len(data.x), batch):
            out = model(data.x[i:i + batch])
            so = data.logits[i:i + batch] if data.logits is not None else None
            terms = qmvae_loss(out, data.target[i:i + batch], service, tc.alpha, tc.beta, so, mask)
            extra = _shape_terms(out.faces, data, slice(i, i + batch), tc, geometry, mask)
            for k, v in {**terms._asdict(), **extra}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(out.faces)
            if service is not None:
                generated.append(service(composite(out.faces, data.target[i:i + batch], mask)))
    result = {k: v / max(len(data.x), 1) for k, v in sums.items()}
    if service is not None and data.logits is not None:
        result["service_loss_rate"] = service_loss_rate(data.logits, torch.cat(generated))
    return result


def train(ckpt: QMVAECheckpoint, train_data: Prepared, test_data: Prepared, service: Service | None,
          out: Path | None = None, log: Callable[[str], None] = print,
          geometry: Callable | None = None) -> QMVAECheckpoint:
    """Run epochs ``ckpt.epoch + 1 .. tc.epochs`` of Adam on Eq. 7, saving after each epoch.

    Torch's deterministic algorithms are on meanwhile: with several threads some CPU kernels sum in
    a varying order, and the service phase amplifies those last-bit differences into a different
    model (test MSE 0.037 in one run, 0.072 in the next). With them, the same command on the same
    machine and thread count trains the same model bit for bit. An op with no deterministic
    version (in a service of your own, say) warns instead of stopping the run."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(ckpt, train_data, test_data, service, out, log, geometry)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _train(ckpt: QMVAECheckpoint, train_data: Prepared, test_data: Prepared, service: Service | None,
           out: Path | None, log: Callable[[str], None], geometry: Callable | None = None) -> QMVAECheckpoint:
    tc, model = ckpt.train_config, ckpt.model
    optim = torch.optim.Adam(model.parameters(), lr=tc.lr)
    if ckpt.optimizer:
        optim.load_state_dict(ckpt.optimizer)
    n = len(train_data.x)
    mask = paste_mask(model.config) if tc.paste_mask else None
    if n == 0:
        raise InputError("no training faces: the 80/20 split left the training split empty")
    for epoch in range(ckpt.epoch + 1, tc.epochs + 1):
        torch.manual_seed(tc.seed * 1000 + epoch)
        warm = epoch <= tc.warmup_epochs
        alpha = 0.0 if warm else tc.alpha
        if epoch == tc.warmup_epochs + 1 and epoch > 1:
            # A fresh Adam for the service phase: moments scaled to the small MSE gradients made its
            # first steps on the service term large enough to undo the reconstruction (test MSE 0.06).
            optim = torch.optim.Adam(model.parameters(), lr=tc.lr)
        for group in optim.param_groups:
            group["lr"] = tc.lr if warm else tc.lr * tc.service_lr_scale * _decay(tc, epoch)
        for p in model.decoder.parameters():
            p.requires_grad_(warm or not tc.freeze_decoder)
        order = torch.randperm(n)
        model.train()
        start, sums = time.time(), {}
        for b, i in enumerate(range(0, n, tc.batch_size)):
            idx = order[i:i + tc.batch_size]
            result = model(train_data.x[idx])
            target = train_data.target[idx]
            # The service term is estimated on the first `service_batch` faces of the batch: the
            # expression net's backward pass dominates a step on a CPU.
            k = min(tc.service_batch, len(idx))
            sub = result._replace(faces=result.faces[:k])
            so = train_data.logits[idx[:k]] if train_data.logits is not None else None
            service_terms = qmvae_loss(sub, target[:k], service if alpha else None, alpha, tc.beta, so, mask)
            terms = qmvae_loss(result, target, None, alpha, tc.beta)
            total = terms.total + alpha * service_terms.service
            # SSIM on every face of the batch; the geometry (a network's backward pass, like the
            # service's) on the service's faces, and only once the service term has joined.
            shape = _shape_terms(result.faces, train_data, idx, tc, None if warm else geometry, mask, k)
            total = total + sum(_WEIGHT[name](tc) * v for name, v in shape.items())
            optim.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
            optim.step()
            for name, v in (("total", total), ("service", service_terms.service), ("mse", terms.mse),
                            ("codebook", terms.codebook), ("commitment", terms.commitment), *shape.items()):
                sums[name] = sums.get(name, 0.0) + float(v.detach()) * len(idx)
        row = {"epoch": epoch, "alpha": alpha, "seconds": round(time.time() - start, 1),
               **{f"train_{k}": v / n for k, v in sums.items()},
               **{f"test_{k}": v for k, v in evaluate_split(model, test_data, service, tc, geometry=geometry).items()}}
        ckpt.history.append(row)
        ckpt.epoch, ckpt.optimizer = epoch, optim.state_dict()
        log(f"epoch {epoch}/{tc.epochs} ({row['seconds']:.0f} s): train loss {row['train_total']:.4f} "
            f"(mse {row['train_mse']:.4f}, service {row['train_service']:.3f}); test mse {row['test_mse']:.4f}"
            + (f", expression loss rate {row['test_service_loss_rate']:.3f}" if "test_service_loss_rate" in row else ""))
        if out is not None:
            save_checkpoint(ckpt, out)
            write_curves(ckpt.history, out.with_suffix(".curves.csv"))
            plot_curves(ckpt.history, out.with_suffix(".curves.png"))
    for p in model.decoder.parameters():
        p.requires_grad_(True)
    model.eval()
    return ckpt


_WEIGHT = {"structure": lambda tc: tc.ssim_weight, "geometry": lambda tc: tc.geometry_weight}


def _shape_terms(faces: torch.Tensor, data: Prepared, idx, tc: TrainConfig,  # noqa: ANN001 - an index
                 geometry: Callable | None, mask: torch.Tensor | None, k: int | None = None) -> dict[str, torch.Tensor]:
    """The terms of the drawn face's shape that ``tc`` weighs: ``structure`` (1 - SSIM against the
    original) and ``geometry`` (mean absolute change of the pasted face's expression geometry, on
    the first ``k`` faces).

    Shape: faces (B, 3, S, S) in 0..1, data's rows ``idx`` -> scalars
    """
    from pytorch_msssim import ssim

    terms = {}
    target = data.target[idx]
    if tc.ssim_weight:
        terms["structure"] = 1.0 - ssim(faces, target, data_range=1.0, win_size=7)
    if geometry is not None and tc.geometry_weight and data.geometry is not None:
        k = len(faces) if k is None else k
        shown = composite(faces[:k], target[:k], mask)
        terms["geometry"] = (geometry(shown) - data.geometry[idx][:k]).abs().mean()
    return terms


def _decay(tc: TrainConfig, epoch: int) -> float:
    """Learning-rate factor of a service epoch: 1 at the first, falling linearly to 1/n at the last."""
    if not tc.service_decay:
        return 1.0
    n = max(tc.epochs - tc.warmup_epochs, 1)
    return (tc.epochs - epoch + 1) / n


def write_curves(history: list[dict], path: Path) -> Path:
    """The loss curves, one row per epoch (train and test terms), as CSV."""
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    return path


def plot_curves(history: list[dict], path: Path) -> Path:
    """Train/test loss and the test expression loss rate per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("train_total", "test_total", "train_mse", "test_mse"):
        ax1.plot(epochs, [row.get(key, float("nan")) for row in history], label=key)
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.legend(fontsize=7)
    ax2.plot(epochs, [row.get("test_service_loss_rate", float("nan")) for row in history], "o-")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test expression loss rate")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def start_or_resume(out: Path, config: QMVAEConfig, tc: TrainConfig, resume: bool) -> QMVAECheckpoint:
    if resume and out.is_file():
        ckpt = load_checkpoint(out)
        ckpt.train_config.epochs = tc.epochs  # a resumed run may be extended
        return ckpt
    torch.manual_seed(tc.seed)
    return QMVAECheckpoint(QMVAE(config), tc)


def run(faces: Path | list[Path], out: Path, config: QMVAEConfig, tc: TrainConfig, *, resume: bool = False,
        stride: int = 1, max_frames: int | None = None, max_images: int | None = None,
        service: Service | None = None, cap: int | None = None, copies: int = 1, colour: float = 0.0,
        train_only: Collection[Path] = (), log: Callable[[str], None] = print) -> QMVAECheckpoint:
    """Load faces, split, augment the training split, train and save (what `veil train qmvae` runs).

    ``train_only``: sources whose faces only train, never held out (:func:`~veil.qmvae.data.load_faces`);
    ``cap``: at most this many training faces per source (:func:`~veil.qmvae.data.balance`);
    ``copies``/``colour``: jittered copies per training face and their colour jitter (:func:`augment`).
    """
    ckpt = start_or_resume(out, config, tc, resume)
    config = ckpt.model.config
    service = service if service is not None else ExpressionService(config.crop)
    geometry = None
    if ckpt.train_config.geometry_weight:
        from veil.qmvae.service import ExpressionGeometry

        geometry = ExpressionGeometry(config.crop)
    faceset: FaceSet = load_faces(faces, config.crop, stride=stride, max_frames=max_frames,
                                  max_images=max_images, service_spec=getattr(service, "own_crop", None),
                                  train_only=train_only, log=log)
    train_set, test_set = balance(faceset.subset(~faceset.test), cap), faceset.subset(faceset.test)
    if len(test_set) == 0:
        raise InputError("the 80/20 split left no test face: give more media (several photos or a video)")
    rng = np.random.default_rng(tc.seed)
    train_crops = augment(train_set.crops, rng, copies=copies, colour=colour)
    log(f"training on {len(train_set)} faces ({len(train_crops)} with mirrors and jitter), "
        f"testing on {len(test_set)}; inputs: {', '.join(config.inputs)}")
    targets = service_targets(train_set, service)
    if targets is not None:  # an augmented face keeps its original's expression
        targets = targets.repeat(len(train_crops) // len(train_set), *([1] * (targets.dim() - 1)))
    train_data = prepare(train_crops, config, service, tc.seed, logits=targets, geometry=geometry)
    test_data = prepare(test_set.crops, config, service, tc.seed + 1, logits=service_targets(test_set, service),
                        geometry=geometry)
    return train(ckpt, train_data, test_data, service, out, log, geometry)
