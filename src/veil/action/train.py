"""Training of STPrivacy: action loss, sparsity ratio loss, and a min-max game with an adversary.

One step (Li et al., 2023, Sec. 3.4, with the choices of `anonymize.py`):

1. the model (encoder, predictors, anonymizer, action head) minimises
   ``CE(action) + w_ratio * ratio + privacy_weight * confusion(adversary(A(x.detach())))``;
   ``privacy_weight`` is the trade-off weight of training (0 trains a sparsified action model only);
2. the adversaries are fitted to the attributes on the detached anonymized tokens;
3. the preview decoder is fitted to the raw tubelets from the detached anonymized tokens.

Adversaries are re-initialised every ``restart_every`` epochs ("model restarting", Wu et al., TPAMI
2020): an anonymizer that only fooled one adversary's current weights is exposed by a fresh one, which
is what the evaluation's attacker is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from veil.action.anonymize import blend, confusion_loss
from veil.action.blocks import TokenClassifier
from veil.action.config import ActionConfig
from veil.action.model import STPrivacy, to_input, tubelets
from veil.action.sparsify import ratio_loss
from veil.errors import InputError

__all__ = ["TrainConfig", "StepLog", "train", "save_checkpoint", "load_checkpoint"]

Batch = tuple[Tensor, Tensor, Tensor]  # (B, T, H, W, 3) uint8, (B,) actions, (B, A) attributes


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    adversary_lr: float = 1e-3
    privacy_weight: float = 1.0
    ratio_weight: float = 2.0
    random_strength_weight: float = 0.5  # action loss at a random deployment strength
    adversaries: int = 2
    restart_every: int = 5
    tau: float = 1.0
    seed: int = 0


@dataclass
class StepLog:
    epoch: int
    step: int
    steps_per_epoch: int
    losses: dict[str, float] = field(default_factory=dict)


def _adversaries(config: ActionConfig, count: int) -> nn.ModuleList:
    return nn.ModuleList(
        TokenClassifier(config.dim, config.heads, config.head_depth, config.num_attributes, config.mlp_ratio)
        for _ in range(count)
    )


def _model_step(model: STPrivacy, adversaries: nn.ModuleList, batch: Batch, cfg: TrainConfig,
                prior: Tensor) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
    video, action, _ = batch
    x = to_input(video)
    enc = model.encode(x, tau=cfg.tau)
    keep = enc.keep
    logs: dict[str, float] = {}
    if model.anonymizer is not None:
        anonymized = model.anonymizer(enc.tokens, keep)
        z = anonymized
    else:
        z = enc.tokens
    loss = F.cross_entropy(model.head(z, keep), action)
    logs["action"] = float(loss.detach())
    if model.anonymizer is not None and cfg.random_strength_weight > 0:
        s = torch.rand(x.shape[0], device=x.device)
        loss = loss + cfg.random_strength_weight * F.cross_entropy(
            model.head(blend(enc.tokens, anonymized, s), keep), action)
    if enc.stage_keeps:
        r = ratio_loss(enc.stage_keeps, model.config.keep_ratio)
        loss = loss + cfg.ratio_weight * r
        logs["kept"] = float(keep.detach().mean())
    if model.anonymizer is not None and len(adversaries) and cfg.privacy_weight > 0:
        # The adversarial gradient reaches the anonymizer only (see anonymize.py).
        a = model.anonymizer(enc.tokens.detach(), keep.detach())
        conf = torch.stack([confusion_loss(adv(a, keep.detach()), prior) for adv in adversaries]).mean()
        loss = loss + cfg.privacy_weight * conf
        logs["confusion"] = float(conf.detach())
    target = tubelets(x, model.config.tubelet)
    w = keep.detach().unsqueeze(-1)
    recon = ((model.decoder(z.detach()) - target).pow(2) * w).sum() / (w.sum() * target.shape[-1])
    loss = loss + recon
    logs["recon"] = float(recon.detach())
    return loss, logs, z.detach(), keep.detach()


def train(model: STPrivacy, batches: Callable[[], Iterable[Batch]], cfg: TrainConfig,
          steps_per_epoch: int, on_step: Callable[[StepLog], None] | None = None) -> nn.ModuleList:
    """Train ``model`` in place; returns the final adversaries.

    ``batches()`` yields one epoch of ``(video uint8 (B,T,H,W,3), action (B,), attributes (B,A))``.
    """
    if cfg.epochs < 1:
        raise InputError(f"epochs must be at least 1, got {cfg.epochs}")
    torch.manual_seed(cfg.seed)
    use_adv = model.anonymizer is not None and model.config.num_attributes > 0 and cfg.adversaries > 0
    adversaries = _adversaries(model.config, cfg.adversaries if use_adv else 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.1)
    adv_opt = torch.optim.Adam(adversaries.parameters(), lr=cfg.adversary_lr) if use_adv else None
    seen = torch.zeros(model.config.num_attributes)
    count = 0
    model.train()
    step_no = 0
    for epoch in range(cfg.epochs):
        if use_adv and epoch and cfg.restart_every and epoch % cfg.restart_every == 0:
            adversaries = _adversaries(model.config, cfg.adversaries)
            adv_opt = torch.optim.Adam(adversaries.parameters(), lr=cfg.adversary_lr)
        for step, batch in enumerate(batches()):
            attrs = batch[2].float()
            seen += attrs.sum(dim=0)
            count += len(attrs)
            prior = seen / max(count, 1)
            loss, logs, z, keep = _model_step(model, adversaries, batch, cfg, prior)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step_no < total:
                sched.step()
            step_no += 1
            if adv_opt is not None:
                adv_loss = torch.stack([F.binary_cross_entropy_with_logits(adv(z, keep), attrs)
                                        for adv in adversaries]).mean()
                adv_opt.zero_grad(set_to_none=True)
                adv_loss.backward()
                adv_opt.step()
                logs["adversary"] = float(adv_loss.detach())
            if on_step is not None:
                on_step(StepLog(epoch, step, steps_per_epoch, logs))
    model.eval()
    return adversaries


def save_checkpoint(path: str | Path, model: STPrivacy, train_config: TrainConfig | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Weights plus the config needed to rebuild the model; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "veil-stprivacy/1",
        "config": model.config.to_dict(),
        "train_config": asdict(train_config) if train_config else None,
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[STPrivacy, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns it in eval mode with the checkpoint's ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist; train one with `veil action train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise InputError(f"{str(path)!r} is not a veil action checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "veil-stprivacy/1":
        raise InputError(f"{str(path)!r} is not a veil action checkpoint (format tag missing)")
    model = STPrivacy(ActionConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload.get("extra") or {}
